//! Descriptor text → [`Descriptor`]. Line by line; every error names its
//! line. Never panics on any input.

use super::{
    Access, CreateType, Descriptor, DescriptorError, DescriptorFault as F, ExtentKind, ExtentLine,
    HeaderEntry,
};

/// Keys interpreted by the parser, with the line each was seen on.
#[derive(Default)]
struct Seen {
    version: Option<(usize, u32)>,
    encoding: Option<(usize, String)>,
    cid: Option<(usize, u32)>,
    parent_cid: Option<(usize, u32)>,
    create_type: Option<(usize, String)>,
    parent_hint: Option<(usize, String)>,
}

fn err(line: usize, what: F) -> DescriptorError {
    DescriptorError { line, what }
}

pub(super) fn parse(text: &str) -> Result<Descriptor, DescriptorError> {
    let mut seen = Seen::default();
    let mut extra: Vec<HeaderEntry> = Vec::new();
    let mut extra_lines: Vec<usize> = Vec::new();
    let mut ddb: Vec<(String, String)> = Vec::new();
    let mut ddb_lines: Vec<usize> = Vec::new();
    let mut extents = Vec::new();
    let mut last_line = 0;

    for (i, raw) in text.split('\n').enumerate() {
        let n = i + 1;
        last_line = n;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(err(n, F::ControlChar(c as u32)));
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first_word = line.split_whitespace().next().unwrap_or("");
        if let Some(access) = Access::from_word(first_word) {
            let rest = &line[first_word.len()..];
            extents.push(parse_extent(access, rest).map_err(|m| err(n, F::BadExtent(m)))?);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(n, F::Unrecognised(line.to_string())));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(err(n, F::BadKey(key.to_string())));
        }
        let (value, quoted) = unquote(key, value.trim()).map_err(|f| err(n, f))?;
        match key {
            "version" => {
                let v = number(key, &value, 10).map_err(|f| err(n, f))?;
                if !(1..=3).contains(&v) {
                    return Err(err(n, F::UnsupportedVersion(v)));
                }
                put(&mut seen.version, n, key, v)?
            }
            "encoding" => put(&mut seen.encoding, n, key, value)?,
            "CID" => put(
                &mut seen.cid,
                n,
                key,
                number(key, &value, 16).map_err(|f| err(n, f))?,
            )?,
            "parentCID" => put(
                &mut seen.parent_cid,
                n,
                key,
                number(key, &value, 16).map_err(|f| err(n, f))?,
            )?,
            "createType" => put(&mut seen.create_type, n, key, value)?,
            "parentFileNameHint" => put(&mut seen.parent_hint, n, key, value)?,
            _ if key.starts_with("ddb.") => {
                if let Some(j) = ddb.iter().position(|(k, _)| k == key) {
                    return Err(dup(n, key, ddb_lines[j]));
                }
                ddb.push((key.to_string(), value));
                ddb_lines.push(n);
            }
            _ => {
                if let Some(j) = extra.iter().position(|e| e.key == key) {
                    return Err(dup(n, key, extra_lines[j]));
                }
                extra.push(HeaderEntry {
                    key: key.to_string(),
                    value,
                    quoted,
                });
                extra_lines.push(n);
            }
        }
    }

    let missing = |k| err(0, F::Missing(k));
    let version = seen.version.ok_or_else(|| missing("version"))?.1;
    let cid = seen.cid.ok_or_else(|| missing("CID"))?.1;
    let parent_cid = seen.parent_cid.ok_or_else(|| missing("parentCID"))?.1;
    let create_type = seen.create_type.ok_or_else(|| missing("createType"))?.1;
    if extents.is_empty() {
        return Err(err(last_line, F::NoExtents));
    }
    Ok(Descriptor {
        version,
        encoding: seen.encoding.map(|(_, v)| v),
        cid,
        parent_cid,
        create_type: CreateType::from_name(&create_type),
        parent_file_name_hint: seen.parent_hint.map(|(_, v)| v),
        extra,
        extents,
        ddb,
    })
}

fn dup(line: usize, key: &str, first_line: usize) -> DescriptorError {
    err(
        line,
        F::Duplicate {
            key: key.to_string(),
            first_line,
        },
    )
}

fn put<T>(
    slot: &mut Option<(usize, T)>,
    line: usize,
    key: &str,
    v: T,
) -> Result<(), DescriptorError> {
    if let Some((first, _)) = slot {
        return Err(dup(line, key, *first));
    }
    *slot = Some((line, v));
    Ok(())
}

/// Strip one pair of double quotes; a quote anywhere else is an error.
fn unquote(key: &str, v: &str) -> Result<(String, bool), F> {
    if let Some(inner) = v.strip_prefix('"') {
        let Some(inner) = inner.strip_suffix('"') else {
            return Err(F::UnterminatedQuote {
                key: key.to_string(),
            });
        };
        if inner.contains('"') {
            return Err(F::StrayQuote {
                key: key.to_string(),
            });
        }
        Ok((inner.to_string(), true))
    } else if v.contains('"') {
        Err(F::StrayQuote {
            key: key.to_string(),
        })
    } else {
        Ok((v.to_string(), false))
    }
}

fn number(key: &str, v: &str, radix: u32) -> Result<u32, F> {
    let digits = if radix == 16 {
        v.strip_prefix("0x").unwrap_or(v)
    } else {
        v
    };
    let ok = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
    ok.then(|| u32::from_str_radix(digits, radix).ok())
        .flatten()
        .ok_or_else(|| F::BadValue {
            key: key.to_string(),
            value: v.to_string(),
            expected: if radix == 16 {
                "32-bit hexadecimal number"
            } else {
                "32-bit decimal number"
            },
        })
}

/// `<sectors> <TYPE> ["<file>" [<offset>]]` after the access word.
fn parse_extent(access: Access, rest: &str) -> Result<ExtentLine, String> {
    let rest = rest.trim_start();
    let (sectors_word, rest) = split_word(rest);
    let sectors: u64 = sectors_word
        .parse()
        .map_err(|_| format!("size {sectors_word:?} is not a number of sectors"))?;
    if sectors == 0 {
        return Err("size is 0 sectors".to_string());
    }
    let (kind_word, rest) = split_word(rest.trim_start());
    if kind_word.is_empty() {
        return Err("extent type is missing".to_string());
    }
    let kind = ExtentKind::from_word(kind_word)
        .ok_or_else(|| format!("unknown extent type {kind_word:?}"))?;
    let rest = rest.trim_start();
    let (file, rest) = if let Some(q) = rest.strip_prefix('"') {
        let end = q
            .find('"')
            .ok_or_else(|| "file name has an unterminated quote".to_string())?;
        let name = &q[..end];
        if name.is_empty() {
            return Err("file name is empty".to_string());
        }
        (Some(name.to_string()), &q[end + 1..])
    } else if rest.is_empty() {
        (None, rest)
    } else {
        return Err(format!(
            "file name must be in double quotes, found {rest:?}"
        ));
    };
    let rest = rest.trim();
    let offset = if rest.is_empty() {
        None
    } else {
        let (w, tail) = split_word(rest);
        if !tail.trim().is_empty() {
            return Err(format!("unexpected {:?} after the offset", tail.trim()));
        }
        Some(
            w.parse::<u64>()
                .map_err(|_| format!("offset {w:?} is not a number of sectors"))?,
        )
    };
    match (kind, &file) {
        (ExtentKind::Zero, Some(_)) => return Err("ZERO extent takes no file name".to_string()),
        (ExtentKind::Zero, None) => {}
        (_, None) => return Err(format!("{kind_word} extent needs a quoted file name")),
        _ => {}
    }
    if offset.is_some() && file.is_none() {
        return Err("offset without a file name".to_string());
    }
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
    })
}

fn split_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}
