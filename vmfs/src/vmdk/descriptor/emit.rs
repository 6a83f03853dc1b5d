//! [`Descriptor`] → text, in the layout ESX writes. Key order matters to
//! qemu, which finds `CID` with a substring search: `CID` is written before
//! `parentCID` and before anything that could contain those letters.

use super::{Descriptor, DescriptorError, DescriptorFault};
use std::fmt::Write;

fn check(line: usize, what: &str, v: &str) -> Result<(), DescriptorError> {
    if v.chars().any(|c| c == '"' || c.is_control()) {
        return Err(DescriptorError {
            line,
            what: DescriptorFault::Unrepresentable {
                what: what.to_string(),
                value: v.to_string(),
            },
        });
    }
    Ok(())
}

fn check_key(line: usize, k: &str) -> Result<(), DescriptorError> {
    let ok = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(DescriptorError {
            line,
            what: DescriptorFault::BadKey(k.to_string()),
        })
    }
}

pub(super) fn emit(d: &Descriptor) -> Result<String, DescriptorError> {
    let mut lines: Vec<String> = vec!["# Disk DescriptorFile".to_string()];
    lines.push(format!("version={}", d.version));
    if let Some(enc) = &d.encoding {
        check(lines.len() + 1, "encoding", enc)?;
        lines.push(format!("encoding=\"{enc}\""));
    }
    lines.push(format!("CID={:08x}", d.cid));
    lines.push(format!("parentCID={:08x}", d.parent_cid));
    let ct = d.create_type.name();
    check(lines.len() + 1, "createType", ct)?;
    lines.push(format!("createType=\"{ct}\""));
    if let Some(hint) = &d.parent_file_name_hint {
        check(lines.len() + 1, "parentFileNameHint", hint)?;
        lines.push(format!("parentFileNameHint=\"{hint}\""));
    }
    for e in &d.extra {
        let n = lines.len() + 1;
        check_key(n, &e.key)?;
        check(n, &e.key, &e.value)?;
        let reserved = [
            "version",
            "encoding",
            "CID",
            "parentCID",
            "createType",
            "parentFileNameHint",
        ];
        if reserved.contains(&e.key.as_str()) || e.key.starts_with("ddb.") {
            return Err(DescriptorError {
                line: n,
                what: DescriptorFault::Duplicate {
                    key: e.key.clone(),
                    first_line: n,
                },
            });
        }
        if !e.quoted && (e.value.trim() != e.value || e.value.is_empty()) {
            // Unquoted values lose surrounding blanks: quote them.
            lines.push(format!("{}=\"{}\"", e.key, e.value));
        } else if e.quoted {
            lines.push(format!("{}=\"{}\"", e.key, e.value));
        } else {
            lines.push(format!("{}={}", e.key, e.value));
        }
    }
    lines.push(String::new());
    lines.push("# Extent description".to_string());
    for x in &d.extents {
        let n = lines.len() + 1;
        let mut s = format!("{} {} {}", x.access.word(), x.sectors, x.kind.word());
        if let Some(f) = &x.file {
            check(n, "extent file name", f)?;
            if f.is_empty() {
                return Err(DescriptorError {
                    line: n,
                    what: DescriptorFault::BadExtent("file name is empty".to_string()),
                });
            }
            let _ = write!(s, " \"{f}\"");
            if let Some(o) = x.offset {
                let _ = write!(s, " {o}");
            }
        }
        lines.push(s);
    }
    lines.push(String::new());
    lines.push("# The Disk Data Base".to_string());
    lines.push("#DDB".to_string());
    lines.push(String::new());
    for (k, v) in &d.ddb {
        let n = lines.len() + 1;
        check_key(n, k)?;
        if !k.starts_with("ddb.") {
            return Err(DescriptorError {
                line: n,
                what: DescriptorFault::BadKey(k.clone()),
            });
        }
        check(n, k, v)?;
        lines.push(format!("{k} = \"{v}\""));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Ok(text)
}
