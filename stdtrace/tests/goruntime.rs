//! The Go runtime parsers (`stdtrace::goruntime`) on real Go binaries: the writer fixture built
//! by every supported toolchain in every flavour (`cargo xtask go-fixtures`), checked against
//! the binaries' own symbol tables, DWARF and call frame information, and against corrupt
//! inputs. No root needed.

#[path = "support/can_run.rs"]
mod can_run;
#[path = "goruntime/dwarf.rs"]
mod dwarf;
#[path = "goruntime/fixtures.rs"]
mod fixtures;
#[path = "goruntime/hostile.rs"]
mod hostile;
#[path = "goruntime/offsets.rs"]
mod offsets;
#[path = "goruntime/pclntab.rs"]
mod pclntab;
#[path = "goruntime/tls.rs"]
mod tls;

use std::{fs, path::Path};

use stdtrace::goruntime::{
    GoBinary, buildinfo, elf::ElfImage, is_go_binary, pclntab::PclntabSource,
};

use fixtures::{FLAVOURS, Toolchain, toolchains};

const MODULE: &str = "stdtrace.test/writer";

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

fn parse(toolchain: &Toolchain, flavour: &str) -> (Vec<u8>, GoBinary) {
    let path = toolchain.writer(flavour);
    let data = read(&path);
    let go = GoBinary::parse(&data).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    (data, go)
}

/// A copy of an ELF file without section headers, as `sstrip` leaves one.
fn without_section_headers(data: &[u8]) -> Vec<u8> {
    let mut copy = data.to_vec();
    copy[0x28..0x30].fill(0); // e_shoff
    copy[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
    copy
}

#[test]
fn buildinfo_names_the_exact_toolchain_and_module() {
    for toolchain in toolchains() {
        for flavour in FLAVOURS {
            let (data, go) = parse(&toolchain, flavour);
            let what = format!("Go {} {flavour}", toolchain.label);
            assert_eq!(go.build_info.go_version, toolchain.go_version, "{what}");
            assert_eq!(go.build_info.main_path.as_deref(), Some(MODULE), "{what}");
            assert_eq!(go.build_info.main_module.as_deref(), Some(MODULE), "{what}");
            assert_eq!(go.build_info.ptr_size, 8, "{what}");
            let version = go.version.as_ref().expect("a parsed version");
            assert_eq!(version.raw, toolchain.go_version, "{what}");
            assert!(is_go_binary(&data), "{what}");
        }
    }
}

#[test]
fn without_section_headers_everything_is_found_by_scanning() {
    for toolchain in toolchains() {
        for flavour in FLAVOURS {
            let (data, go) = parse(&toolchain, flavour);
            let what = format!("Go {} {flavour}", toolchain.label);
            let bare = without_section_headers(&data);
            let elf = ElfImage::parse(&bare).unwrap();
            assert!(elf.section(".gopclntab").is_none(), "{what}");
            let info = buildinfo::find(&elf).unwrap_or_else(|err| panic!("{what}: {err}"));
            assert_eq!(info.go_version, toolchain.go_version, "{what}");
            assert_eq!(info.address, go.build_info.address, "{what}");

            let scanned = GoBinary::from_elf(&elf).unwrap_or_else(|err| panic!("{what}: {err}"));
            assert_eq!(scanned.pclntab.source(), PclntabSource::Scan, "{what}");
            assert_eq!(scanned.pclntab.address(), go.pclntab.address(), "{what}");
            assert_eq!(
                scanned.pclntab.text_start(),
                go.pclntab.text_start(),
                "{what}"
            );
            assert_eq!(scanned.pclntab.gofunc(), go.pclntab.gofunc(), "{what}");
            assert_eq!(
                scanned.tls.as_ref().map(|slot| slot.offset),
                go.tls.as_ref().map(|slot| slot.offset),
                "{what}"
            );
            let layout = scanned.layout.as_ref().unwrap();
            assert_eq!(
                layout.offsets,
                go.layout.as_ref().unwrap().offsets,
                "{what}"
            );
            let func = scanned
                .pclntab
                .func_by_name("main.writeUntilEAGAIN")
                .unwrap();
            for pc in func.entry..func.end {
                assert_eq!(
                    scanned.pclntab.frames(pc),
                    go.pclntab.frames(pc),
                    "{what} {pc:#x}"
                );
            }
            assert!(is_go_binary(&bare), "{what}");
        }
    }
}
