//! The runtime's struct offsets: the built-in table against each toolchain's DWARF, and the
//! guess for versions the table has no row for.

use stdtrace::goruntime::{
    elf::ElfImage,
    offsets::{self, OffsetsSource},
    version::GoVersion,
};

use crate::{
    fixtures::{FLAVOURS, is_stripped, toolchains},
    parse, read,
};

#[test]
fn table_offsets_equal_dwarf_offsets() {
    let toolchains = toolchains();
    for toolchain in &toolchains {
        let data = read(&toolchain.writer("default"));
        let elf = ElfImage::parse(&data).unwrap();
        let from_dwarf =
            offsets::from_dwarf(&elf).unwrap_or_else(|err| panic!("Go {}: {err}", toolchain.label));
        let version = GoVersion::parse(&toolchain.go_version).unwrap();
        let (from_table, source) = offsets::from_table(&version).unwrap();
        assert_eq!(
            source,
            OffsetsSource::Table {
                version: leak(&toolchain.go_version)
            },
            "Go {}: the table has no row for this toolchain; run `cargo xtask go-offsets`",
            toolchain.label
        );
        assert_eq!(from_table, from_dwarf, "Go {}", toolchain.label);

        for flavour in FLAVOURS {
            let (_, go) = parse(toolchain, flavour);
            let layout = go.layout.as_ref().unwrap();
            assert_eq!(
                layout.offsets, from_dwarf,
                "Go {} {flavour}",
                toolchain.label
            );
            let expected_source = if is_stripped(flavour) {
                source.clone()
            } else {
                OffsetsSource::Dwarf
            };
            assert_eq!(
                layout.source, expected_source,
                "Go {} {flavour}",
                toolchain.label
            );
            // runtime.allm: the symbol where there is one; DWARF agrees.
            if !is_stripped(flavour) {
                let allm = *layout.allm.as_ref().unwrap();
                let elf_data = read(&toolchain.writer(flavour));
                let elf = ElfImage::parse(&elf_data).unwrap();
                assert_eq!(Some(allm), elf.symbol("runtime.allm").map(|s| s.address));
            } else {
                assert!(layout.allm.is_err(), "Go {} {flavour}", toolchain.label);
            }
        }
    }
    // Every row of the table comes from a toolchain the tests have (unless skipped).
    if toolchains.len() == 8 {
        for row in offsets::table() {
            assert!(
                toolchains.iter().any(|t| t.go_version == row.go_version),
                "table row {} is for no tested toolchain",
                row.go_version
            );
        }
    }
}

fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

#[test]
fn versions_without_a_row_get_the_nearest_as_a_guess() {
    let newest = offsets::table().last().unwrap();
    let (_, source) = offsets::from_table(&GoVersion::parse("go1.99.1").unwrap()).unwrap();
    assert_eq!(
        source,
        OffsetsSource::Guess {
            nearest: newest.go_version
        }
    );
    let oldest = offsets::table().first().unwrap();
    let (offsets, source) = offsets::from_table(&GoVersion::parse("go1.16.15").unwrap()).unwrap();
    assert_eq!(
        source,
        OffsetsSource::Guess {
            nearest: oldest.go_version
        }
    );
    assert_eq!(offsets, oldest.offsets);
    // Patch releases share their minor version's row.
    let (_, source) = offsets::from_table(&GoVersion::parse("go1.21.0").unwrap()).unwrap();
    assert!(matches!(source, OffsetsSource::Table { version } if version.starts_with("go1.21.")));
}
