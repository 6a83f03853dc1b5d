//! docs/fsck.md documents every code, with what it means and what --repair does.

use vmfs_fsck::Code;

#[test]
fn every_code_has_a_line_in_docs() {
    let doc = include_str!("../../docs/fsck.md");
    let mut missing = Vec::new();
    for c in Code::ALL {
        let line = doc
            .lines()
            .find(|l| l.starts_with(&format!("| {} |", c.as_str())));
        match line {
            Some(l) if l.contains(c.meaning()) && l.contains(c.repair()) => {}
            _ => missing.push(c.as_str()),
        }
    }
    assert!(
        missing.is_empty(),
        "codes missing or out of date in docs/fsck.md: {missing:?}"
    );
}

#[test]
fn codes_parse_back() {
    for c in Code::ALL {
        assert_eq!(Code::parse(c.as_str()), Some(c));
        assert_eq!(Code::parse(&c.as_str().to_lowercase()), Some(c));
    }
    assert_eq!(Code::parse("NOPE001"), None);
}
