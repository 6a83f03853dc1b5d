//! The end of the run: the volume, mounted afresh, holds exactly what the
//! model says — every name, every file's last committed bytes.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::content::mismatch;
use super::model::{Kind, Model, CRASH_DIR};

/// Files and bytes checked, or every difference found.
pub fn volume_matches(root: &Path, m: &Model) -> Result<(usize, u64), Vec<String>> {
    let mut bad = Vec::new();
    let (mut files, mut bytes) = (0, 0u64);
    for (name, n) in &m.names {
        let p = root.join(name);
        match n.kind {
            None => {
                if let Ok(md) = std::fs::symlink_metadata(&p) {
                    bad.push(format!(
                        "{name}: exists ({:?}, inode {}, {} bytes), the model says removed\n{}",
                        md.file_type(),
                        md.ino(),
                        md.len(),
                        m.story_of(name)
                    ));
                }
            }
            Some(Kind::Dir) => match std::fs::read_dir(&p) {
                Err(e) => bad.push(format!("{name}: directory unreadable: {e}")),
                Ok(rd) => {
                    for ent in rd {
                        match ent {
                            Err(e) => bad.push(format!("{name}: listing: {e}")),
                            Ok(ent) => {
                                let child = format!("{name}/{}", ent.file_name().to_string_lossy());
                                if !m.names.contains_key(&child) {
                                    bad.push(format!("{child}: listed, no host made it"));
                                }
                            }
                        }
                    }
                }
            },
            Some(Kind::File(id)) => {
                let f = &m.files[&id];
                match std::fs::read(&p) {
                    Err(e) => bad.push(format!("{name}: file {id} unreadable: {e}")),
                    Ok(_) if f.uncertain => {}
                    Ok(got) => {
                        if let Some(why) = mismatch(&got, id, f.version) {
                            bad.push(format!(
                                "{name}: {why}\nhistory of file {id}:\n{}",
                                m.history(id)
                            ));
                        }
                        files += 1;
                        bytes += got.len() as u64;
                    }
                }
            }
        }
    }
    // What the crashed host was doing is not modelled, but must read back
    // without an I/O error.
    if let Ok(rd) = std::fs::read_dir(root.join(CRASH_DIR)) {
        for ent in rd.flatten() {
            if let Err(e) = std::fs::read(ent.path()) {
                bad.push(format!("{}: unreadable: {e}", ent.path().display()));
            }
        }
    }
    if bad.is_empty() {
        Ok((files, bytes))
    } else {
        Err(bad)
    }
}
