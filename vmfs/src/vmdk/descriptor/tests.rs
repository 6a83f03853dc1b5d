use super::*;
use proptest::prelude::*;

const ESX_FLAT: &str = r#"# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=fffffffe
parentCID=ffffffff
isNativeSnapshot="no"
createType="vmfs"

# Extent description
RW 20971520 VMFS "web01-flat.vmdk"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.deletable = "true"
ddb.geometry.cylinders = "1305"
ddb.geometry.heads = "255"
ddb.geometry.sectors = "63"
ddb.longContentID = "2f1e3c5a8d0b4e6f9a7c1d3efffffffe"
ddb.thinProvisioned = "1"
ddb.uuid = "60 00 C2 9b 83 5d 3e 4e-a0 2b 6c 51 cd 0c 5f 41"
ddb.virtualHWVersion = "13"
"#;

fn fault(text: &str) -> DescriptorError {
    Descriptor::parse(text).expect_err("descriptor should be refused")
}

#[test]
fn parses_esx_flat_descriptor() {
    let d = Descriptor::parse(ESX_FLAT).unwrap();
    assert_eq!(d.version, 1);
    assert_eq!(d.cid, 0xffff_fffe);
    assert_eq!(d.parent_cid, NO_PARENT_CID);
    assert_eq!(d.create_type, CreateType::Vmfs);
    assert_eq!(d.encoding.as_deref(), Some("UTF-8"));
    assert_eq!(d.extents.len(), 1);
    assert_eq!(d.extents[0].kind, ExtentKind::Vmfs);
    assert_eq!(d.extents[0].file.as_deref(), Some("web01-flat.vmdk"));
    assert_eq!(d.capacity_sectors(), 20971520);
    assert_eq!(d.adapter_type(), Some(AdapterType::LsiLogic));
    assert_eq!(
        d.geometry(),
        Some(Geometry {
            cylinders: 1305,
            heads: 255,
            sectors: 63
        })
    );
    assert_eq!(d.virtual_hw_version(), Some(13));
    assert!(d.thin_provisioned());
    assert_eq!(d.provisioning(), Provisioning::Thin);
    assert_eq!(d.ddb_get("ddb.deletable"), Some("true"));
    assert_eq!(d.extra.len(), 1);
    assert_eq!(d.extra[0].key, "isNativeSnapshot");
    assert!(!d.has_parent());
}

#[test]
fn round_trip_keeps_unknown_keys_and_order() {
    let d = Descriptor::parse(ESX_FLAT).unwrap();
    let text = d.to_text().unwrap();
    let again = Descriptor::parse(&text).unwrap();
    assert_eq!(d, again);
    assert_eq!(text, again.to_text().unwrap());
    // CID comes before parentCID and createType (qemu searches for "CID").
    let cid = text.find("CID=").unwrap();
    assert!(cid < text.find("parentCID=").unwrap());
    assert!(text.contains("createType=\"vmfs\"\n"));
}

#[test]
fn parses_delta_and_hosted_forms() {
    let text = "version=1\r\nCID=1a2b3c4d\r\nparentCID=0000beef\r\ncreateType=\"vmfsSparse\"\r\n\
                parentFileNameHint=\"base disk.vmdk\"\r\n\
                RW 4096 VMFSSPARSE \"base disk-000001-delta.vmdk\"\r\n\
                RDONLY 100 FLAT \"x.img\" 2048\r\n  NOACCESS 7 ZERO\r\n\
                ddb.longContentID=abc\r\n";
    let d = Descriptor::parse(text).unwrap();
    assert_eq!(d.parent_cid, 0xbeef);
    assert_eq!(d.parent_file_name_hint.as_deref(), Some("base disk.vmdk"));
    assert_eq!(
        d.extents[0].file.as_deref(),
        Some("base disk-000001-delta.vmdk")
    );
    assert_eq!(d.extents[1].access, Access::ReadOnly);
    assert_eq!(d.extents[1].offset, Some(2048));
    assert_eq!(d.extents[2].kind, ExtentKind::Zero);
    assert_eq!(d.extents[2].file, None);
    assert_eq!(d.ddb_get("ddb.longContentID"), Some("abc"));
    assert_eq!(Descriptor::parse(&d.to_text().unwrap()).unwrap(), d);
}

#[test]
fn trailing_nul_padding_is_ignored_but_embedded_nul_is_not() {
    let mut b = ESX_FLAT.as_bytes().to_vec();
    b.extend_from_slice(&[0u8; 300]);
    assert!(Descriptor::parse_bytes(&b).is_ok());
    let mut b = ESX_FLAT.as_bytes().to_vec();
    b[30] = 0; // inside line 2, "version=1"
    let e = Descriptor::parse_bytes(&b).unwrap_err();
    assert_eq!(e.line, 2);
    assert_eq!(e.what, DescriptorFault::ControlChar(0));
}

#[test]
fn errors_name_the_line() {
    let base = "version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"vmfs\"\n";
    let with = |extra: &str| format!("{base}{extra}\nRW 8 VMFS \"f\"\n");

    let e = fault(&with("this is not a key value"));
    assert_eq!(e.line, 5);
    assert!(matches!(e.what, DescriptorFault::Unrecognised(_)));

    let e = fault(&with("CID=2"));
    assert_eq!(e.line, 5);
    assert_eq!(
        e.what,
        DescriptorFault::Duplicate {
            key: "CID".into(),
            first_line: 2
        }
    );

    let e = fault("version=1\nCID=xyz\n");
    assert_eq!(e.line, 2);
    assert!(matches!(e.what, DescriptorFault::BadValue { .. }));
    assert!(e.to_string().starts_with("descriptor line 2: "), "{e}");

    let e = fault(&with("ddb.uuid = \"60 00"));
    assert_eq!(e.line, 5);
    assert!(matches!(e.what, DescriptorFault::UnterminatedQuote { .. }));

    let e = fault(&with("RW 0 VMFS \"f\""));
    assert_eq!(e.line, 5);
    assert!(matches!(e.what, DescriptorFault::BadExtent(_)));

    let e = fault(&with("RW 8 BOGUS \"f\""));
    assert_eq!(e.line, 5);
    assert!(e.to_string().contains("BOGUS"), "{e}");

    let e = fault(&with("RW 8 VMFS f-flat.vmdk"));
    assert!(e.to_string().contains("double quotes"), "{e}");

    let e = fault(&with("RW 8 VMFS \"f\" 12 junk"));
    assert!(e.to_string().contains("junk"), "{e}");

    let e = fault(&with("RW 8 ZERO \"f\""));
    assert_eq!(e.line, 5);

    let e = fault("version=7\n");
    assert_eq!(
        (e.line, e.what),
        (1, DescriptorFault::UnsupportedVersion(7))
    );

    let e = fault("version=1\nparentCID=ffffffff\ncreateType=\"vmfs\"\nRW 8 VMFS \"f\"\n");
    assert_eq!(
        (e.line, e.what.clone()),
        (0, DescriptorFault::Missing("CID"))
    );
    assert_eq!(e.to_string(), "descriptor: required key CID is missing");

    let e = fault(base);
    assert_eq!(e.what, DescriptorFault::NoExtents);

    let e = fault(&with("bad key = 1"));
    assert!(matches!(e.what, DescriptorFault::BadKey(_)));

    let e = Descriptor::parse_bytes(b"version=1\nCID=\xff\n").unwrap_err();
    assert_eq!((e.line, e.what), (2, DescriptorFault::NotUtf8));
}

#[test]
fn emit_refuses_unrepresentable_values() {
    let mut d = Descriptor::parse(ESX_FLAT).unwrap();
    d.ddb_set("ddb.uuid", "has \"quote\"");
    let e = d.to_text().unwrap_err();
    assert!(matches!(e.what, DescriptorFault::Unrepresentable { .. }));
    assert!(e.line > 10);
    let mut d = Descriptor::parse(ESX_FLAT).unwrap();
    d.extents[0].file = Some("a\nb".into());
    assert!(d.to_text().is_err());
}

#[test]
fn geometry_follows_vmware_rules() {
    let g = Geometry::for_capacity(20971520, &AdapterType::LsiLogic);
    assert_eq!((g.cylinders, g.heads, g.sectors), (1305, 255, 63));
    let g = Geometry::for_capacity(1 << 20, &AdapterType::LsiLogic);
    assert_eq!((g.heads, g.sectors), (64, 32));
    let g = Geometry::for_capacity(20971520, &AdapterType::Ide);
    assert_eq!((g.cylinders, g.heads, g.sectors), (16383, 16, 63));
}

#[test]
fn provisioning_is_recorded() {
    let mut d = Descriptor::parse(ESX_FLAT).unwrap();
    for p in [
        Provisioning::Thin,
        Provisioning::ZeroedThick,
        Provisioning::EagerZeroedThick,
    ] {
        d.set_provisioning(p);
        let back = Descriptor::parse(&d.to_text().unwrap()).unwrap();
        assert_eq!(back.provisioning(), p);
        assert_eq!(back.thin_provisioned(), p == Provisioning::Thin);
    }
}

#[test]
fn content_id_changes() {
    let mut d = Descriptor::parse(ESX_FLAT).unwrap();
    let old = d.cid;
    d.change_content_id();
    assert_ne!(d.cid, old);
    assert_ne!(d.cid, NO_PARENT_CID);
    assert!(d
        .long_content_id()
        .unwrap()
        .ends_with(&format!("{:08x}", d.cid)));
}

fn name_strategy() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 ._/-]{1,20}"
}

fn descriptor_strategy() -> impl Strategy<Value = Descriptor> {
    let kinds = prop::sample::select(vec![
        ExtentKind::Flat,
        ExtentKind::Sparse,
        ExtentKind::Vmfs,
        ExtentKind::VmfsSparse,
        ExtentKind::SeSparse,
        ExtentKind::Zero,
    ]);
    let access = prop::sample::select(vec![Access::ReadWrite, Access::ReadOnly, Access::NoAccess]);
    let extent = (
        access,
        1u64..u64::MAX,
        kinds,
        name_strategy(),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(access, sectors, kind, f, off)| ExtentLine {
            access,
            sectors,
            kind,
            file: (kind != ExtentKind::Zero).then_some(f),
            offset: if kind == ExtentKind::Zero { None } else { off },
        });
    let ct = prop::sample::select(vec!["vmfs", "vmfsSparse", "monolithicFlat", "x-custom"]);
    (
        1u32..=3,
        prop::option::of("[A-Za-z0-9-]{1,10}"),
        any::<u32>(),
        any::<u32>(),
        ct,
        prop::option::of(name_strategy()),
        prop::collection::vec(
            (
                "[a-z][A-Za-z0-9_]{0,8}",
                "[A-Za-z0-9 ]{0,10}",
                any::<bool>(),
            ),
            0..4,
        ),
        prop::collection::vec(extent, 1..4),
        prop::collection::vec(
            ("ddb\\.[a-z][A-Za-z.]{0,12}", "[A-Za-z0-9 .:-]{0,20}"),
            0..6,
        ),
    )
        .prop_map(
            |(version, encoding, cid, parent_cid, ct, hint, extra, extents, ddb)| {
                let reserved = [
                    "version",
                    "encoding",
                    "CID",
                    "parentCID",
                    "createType",
                    "parentFileNameHint",
                ];
                let mut extra_entries: Vec<HeaderEntry> = Vec::new();
                for (k, v, q) in extra {
                    if reserved.contains(&k.as_str()) || extra_entries.iter().any(|e| e.key == k) {
                        continue;
                    }
                    let v = if q { v } else { v.trim().to_string() };
                    let quoted = q || v.is_empty();
                    extra_entries.push(HeaderEntry {
                        key: k,
                        value: v,
                        quoted,
                    });
                }
                let mut d = Descriptor::new(CreateType::from_name(ct), cid, extents);
                d.version = version;
                d.encoding = encoding;
                d.parent_cid = parent_cid;
                d.parent_file_name_hint = hint;
                d.extra = extra_entries;
                for (k, v) in ddb {
                    d.ddb_set(&k, v);
                }
                d
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_text_never_panics(text in "(?s).{0,400}") {
        let _ = Descriptor::parse(&text);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = Descriptor::parse_bytes(&bytes);
    }

    #[test]
    fn mutated_descriptor_never_panics(pos in 0usize..600, ch in any::<char>()) {
        let mut s: Vec<char> = ESX_FLAT.chars().collect();
        let p = pos % s.len();
        s[p] = ch;
        let text: String = s.into_iter().collect();
        if let Err(e) = Descriptor::parse(&text) {
            prop_assert!(e.line <= text.split('\n').count());
        }
    }

    #[test]
    fn emit_parse_round_trip(d in descriptor_strategy()) {
        let text = d.to_text().unwrap();
        let back = Descriptor::parse(&text).unwrap();
        prop_assert_eq!(back, d);
    }
}
