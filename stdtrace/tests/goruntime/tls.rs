//! The TLS slot of the current goroutine (`g`): found in the code, and checked against
//! `runtime.tlsg`.

use stdtrace::goruntime::{
    Reason,
    elf::ElfImage,
    tls::{self, TlsSource},
};

use crate::{
    fixtures::{FLAVOURS, has_cgo, is_stripped, toolchains, unstripped},
    parse, read,
};

#[test]
fn the_g_slot_from_code_equals_the_one_from_runtime_tlsg() {
    for toolchain in toolchains() {
        for flavour in FLAVOURS {
            let (data, go) = parse(&toolchain, flavour);
            let what = format!("Go {} {flavour}", toolchain.label);
            let elf = ElfImage::parse(&data).unwrap();
            let from_code = tls::g_tls_offset_from_code(&elf, Some(&go.pclntab))
                .unwrap_or_else(|err| panic!("{what}: {err}"));
            assert!(
                matches!(from_code.source, TlsSource::Code { agreeing, total } if agreeing == total && total > 100),
                "{what}: {from_code:?}"
            );

            let reference_data = read(&toolchain.writer(unstripped(flavour)));
            let reference_elf = ElfImage::parse(&reference_data).unwrap();
            let expected = match tls::g_tls_offset_from_symbols(&reference_elf) {
                Ok(slot) => slot.offset,
                Err(Reason::NoSymbol { .. }) => {
                    // Go's own linker: runtime.tlsg is not in the symbol table, and the slot
                    // is the whole TLS block (if there is one): -8.
                    assert!(!has_cgo(flavour), "{what}: no runtime.tlsg");
                    assert!(
                        reference_elf.tls_segment().is_none_or(|tls| tls.memsz == 8),
                        "{what}"
                    );
                    -8
                }
                Err(err) => panic!("{what}: {err}"),
            };
            assert_eq!(from_code.offset, expected, "{what}");
            // Without the function table every executable byte votes, C code included.
            let unguided = tls::g_tls_offset_from_code(&elf, None)
                .unwrap_or_else(|err| panic!("{what}: {err}"));
            assert_eq!(unguided.offset, expected, "{what}: {unguided:?}");
            assert_eq!(go.tls.as_ref().unwrap().offset, expected, "{what}");
            if !is_stripped(flavour) && has_cgo(flavour) {
                assert_eq!(
                    go.tls.as_ref().unwrap().source,
                    TlsSource::TlsgSymbol,
                    "{what}"
                );
            }
            // The fixture's C thread-locals do move the slot.
            assert_eq!(
                flavour.starts_with("cgo-tls"),
                expected != -8,
                "{what}: {expected}"
            );
        }
    }
}
