//! Turning linkage names into the names people wrote: Rust (legacy and v0, without the
//! `::h<hash>` suffix) and C++ (Itanium ABI). Anything else, or anything that does not
//! demangle, is returned as it is.

use gimli::DwLang;

/// Names longer than this are shown raw: demangling cost grows with them, and no real
/// function name comes close.
const MAX_MANGLED_LEN: usize = 16 * 1024;

/// The readable form of `name`. `language` is the DWARF unit's language when known: it
/// settles the rare names that are valid in both Rust's legacy scheme and C++'s.
pub(crate) fn demangle(name: &str, language: Option<DwLang>) -> String {
    if name.len() > MAX_MANGLED_LEN {
        return name.to_owned();
    }
    let cpp_first = matches!(
        language,
        Some(
            gimli::DW_LANG_C_plus_plus
                | gimli::DW_LANG_C_plus_plus_03
                | gimli::DW_LANG_C_plus_plus_11
                | gimli::DW_LANG_C_plus_plus_14
        )
    );
    let demangled = if cpp_first {
        demangle_cpp(name).or_else(|| demangle_rust(name))
    } else {
        demangle_rust(name).or_else(|| demangle_cpp(name))
    };
    demangled.unwrap_or_else(|| name.to_owned())
}

fn demangle_rust(name: &str) -> Option<String> {
    if !(name.starts_with("_ZN") || name.starts_with("_R") || name.starts_with("__ZN")) {
        return None;
    }
    // The alternate form leaves out the hash (legacy) and crate disambiguators (v0).
    rustc_demangle::try_demangle(name)
        .ok()
        .map(|demangled| format!("{demangled:#}"))
}

fn demangle_cpp(name: &str) -> Option<String> {
    if !name.starts_with("_Z") {
        return None;
    }
    // cpp_demangle's default recursion limits keep pathological names from exhausting the
    // stack.
    cpp_demangle::Symbol::new(name).ok()?.demangle().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_names_lose_their_hash() {
        assert_eq!(
            demangle("_ZN6writer6output9emit_line17h0123456789abcdefE", None),
            "writer::output::emit_line"
        );
        assert_eq!(demangle("_RNvCs1234_6writer4main", None), "writer::main");
        assert_eq!(
            demangle(
                "_ZN3std2io5stdio6_print17h8a1b2c3d4e5f6789E",
                Some(gimli::DW_LANG_Rust)
            ),
            "std::io::stdio::_print"
        );
    }

    #[test]
    fn cpp_names_get_their_signature() {
        assert_eq!(
            demangle("_ZN2ns6Writer4emitEi", None),
            "ns::Writer::emit(int)"
        );
        assert_eq!(
            demangle("_ZN2ns6Writer4emitEi", Some(gimli::DW_LANG_C_plus_plus_14)),
            "ns::Writer::emit(int)"
        );
        assert_eq!(demangle("_Z3fooi.isra.0", None), "foo(int) [clone .isra.0]");
    }

    #[test]
    fn other_names_are_kept() {
        for name in ["write", "main", "_start", "_Z", "_ZN", "_R", "_Zzzzz", ""] {
            assert_eq!(demangle(name, None), name);
        }
        let long = format!("_ZN{}E", "1a".repeat(MAX_MANGLED_LEN));
        assert_eq!(demangle(&long, None), long);
    }

    #[test]
    fn hostile_names_do_not_panic() {
        let nested = format!("_Z{}v", "PFPFPF".repeat(2000));
        let _ = demangle(&nested, None);
        let templates = format!("_ZN{}E", "1aIS_E".repeat(500));
        let _ = demangle(&templates, None);
        let _ = demangle(&format!("_R{}", "B_".repeat(3000)), None);
        for len in 0..40 {
            let _ = demangle(&"_ZN2ns6Writer4emitEi"[..len.min(20)], None);
        }
    }
}
