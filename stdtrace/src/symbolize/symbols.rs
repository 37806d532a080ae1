//! Naming an address from an ELF symbol table (`.symtab`, `.dynsym`): the fallback when there
//! is no DWARF.
//!
//! A symbol names an address only when the address lies inside it (`start <= address <
//! start + size`). The "nearest preceding symbol" guess that many tools make is wrong for
//! stripped libraries, whose static functions sit between exported ones: it would name them
//! after an unrelated export. Here such an address has no name, which is reported as a miss.

/// How far back from the nearest preceding symbol to look for one that encloses the address
/// (symbols can nest: a sized label inside a function).
const ENCLOSING_LOOKBACK: usize = 16;

/// The ELF symbol types worth naming code with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SymbolKind {
    /// `STT_FUNC`
    Function,
    /// `STT_GNU_IFUNC`: the resolver of an indirect function.
    IndirectFunction,
    /// `STT_NOTYPE` in an executable section: an assembly label.
    Label,
}

/// One symbol as read from a table, before ranking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SymbolCandidate {
    pub name: String,
    pub address: u64,
    pub size: u64,
    pub kind: SymbolKind,
    /// `STB_GLOBAL` or `STB_WEAK` (as opposed to `STB_LOCAL`).
    pub global: bool,
    /// One past the end of the symbol's section: how far a symbol without a size may reach.
    pub section_end: u64,
}

#[derive(Debug)]
struct Entry {
    start: u64,
    size: u64,
    section_end: u64,
    name: Box<str>,
}

/// A symbol table sorted for lookups, with one (the best) name per address.
#[derive(Debug, Default)]
pub(crate) struct SymbolTable {
    entries: Vec<Entry>,
}

/// Which of several symbols at one address to report: sized before unsized, then `write`
/// before `__write` and `__libc_write`, then global before local, then functions before the
/// rest; the name breaks remaining ties so that the choice does not depend on table order.
fn rank(symbol: &SymbolCandidate) -> (bool, bool, bool, SymbolKind, usize, &str) {
    (
        symbol.size == 0,
        symbol.name.starts_with('_'),
        !symbol.global,
        symbol.kind,
        symbol.name.len(),
        &symbol.name,
    )
}

impl SymbolTable {
    /// Builds the table from candidates in any order, from any number of tables.
    pub(crate) fn new(mut symbols: Vec<SymbolCandidate>) -> Self {
        symbols.retain(|symbol| !symbol.name.is_empty() && symbol.address != 0);
        symbols.sort_by(|a, b| {
            a.address
                .cmp(&b.address)
                .then_with(|| rank(a).cmp(&rank(b)))
        });
        symbols.dedup_by(|later, first| later.address == first.address);
        let entries = symbols
            .into_iter()
            .map(|symbol| Entry {
                start: symbol.address,
                size: symbol.size,
                section_end: symbol.section_end,
                name: display_name(&symbol.name).into(),
            })
            .collect();
        Self { entries }
    }

    /// Heap bytes the table holds.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|entry| size_of::<Entry>() + entry.name.len())
            .sum()
    }

    /// Number of distinct symbol addresses.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The (raw, still mangled) name of the symbol that covers `address`.
    pub(crate) fn find(&self, address: u64) -> Option<&str> {
        let after = self.entries.partition_point(|entry| entry.start <= address);
        let nearest = self.entries.get(after.checked_sub(1)?)?;
        let covers = |entry: &Entry| address - entry.start < entry.size;
        let enclosing = self.entries[after.saturating_sub(ENCLOSING_LOOKBACK)..after]
            .iter()
            .rev()
            .find(|entry| covers(entry));
        if let Some(entry) = enclosing {
            return Some(&entry.name);
        }
        // A symbol without a size (hand-written assembly) covers what follows it up to the
        // next symbol, but not past the end of its section: beyond that lie other sections.
        (nearest.size == 0 && address < nearest.section_end).then_some(&*nearest.name)
    }
}

/// `memcpy@@GLIBC_2.14` (as `.symtab` spells versioned symbols) names `memcpy`.
fn display_name(name: &str) -> &str {
    match name.find('@') {
        Some(at) if at > 0 => &name[..at],
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbol(name: &str, address: u64, size: u64, global: bool) -> SymbolCandidate {
        SymbolCandidate {
            name: name.to_owned(),
            address,
            size,
            kind: SymbolKind::Function,
            global,
            section_end: 0x10000,
        }
    }

    #[test]
    fn an_address_is_named_only_by_a_symbol_that_covers_it() {
        let table = SymbolTable::new(vec![
            symbol("exported_a", 0x1000, 0x100, true),
            symbol("exported_b", 0x2000, 0x10, true),
        ]);
        assert_eq!(table.find(0x1000), Some("exported_a"));
        assert_eq!(table.find(0x10ff), Some("exported_a"));
        // A static function of a stripped library, between two exports.
        assert_eq!(table.find(0x1100), None);
        assert_eq!(table.find(0x1fff), None);
        assert_eq!(table.find(0x2008), Some("exported_b"));
        assert_eq!(table.find(0x2010), None);
        assert_eq!(table.find(0xfff), None);
        assert_eq!(table.find(0), None);
        assert_eq!(table.find(u64::MAX), None);
    }

    #[test]
    fn the_public_name_wins_among_aliases() {
        // glibc: `__write`, `__libc_write` and `write` are one function.
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let all = [
                symbol("__libc_write", 0x1000, 0x9d, true),
                symbol("__write", 0x1000, 0x9d, false),
                symbol("write", 0x1000, 0x9d, false),
            ];
            let table = SymbolTable::new(order.iter().map(|i| all[*i].clone()).collect());
            assert_eq!(table.find(0x1010), Some("write"));
            assert_eq!(table.len(), 1);
        }
        let table = SymbolTable::new(vec![
            symbol("helper", 0x1000, 0x10, false),
            symbol("api", 0x1000, 0x10, true),
        ]);
        assert_eq!(table.find(0x1000), Some("api"));
    }

    #[test]
    fn sizeless_symbols_reach_only_the_next_symbol_and_their_section_end() {
        let mut label = symbol("asm_entry", 0x1000, 0, true);
        label.kind = SymbolKind::Label;
        label.section_end = 0x1800;
        let table = SymbolTable::new(vec![label, symbol("next", 0x2000, 0x10, true)]);
        assert_eq!(table.find(0x1000), Some("asm_entry"));
        assert_eq!(table.find(0x17ff), Some("asm_entry"));
        assert_eq!(table.find(0x1800), None);
        assert_eq!(table.find(0x2004), Some("next"));
        // A sized symbol at the same address beats the label.
        let table = SymbolTable::new(vec![
            symbol("label", 0x1000, 0, true),
            symbol("sized", 0x1000, 0x20, false),
        ]);
        assert_eq!(table.find(0x1010), Some("sized"));
        assert_eq!(table.find(0x1020), None);
    }

    #[test]
    fn nested_symbols_name_the_innermost() {
        let table = SymbolTable::new(vec![
            symbol("outer", 0x1000, 0x1000, true),
            symbol("inner", 0x1400, 0x100, true),
            symbol("label", 0x1600, 0, false),
        ]);
        assert_eq!(table.find(0x1450), Some("inner"));
        assert_eq!(table.find(0x1550), Some("outer"));
        assert_eq!(table.find(0x1650), Some("outer"));
    }

    #[test]
    fn versions_and_empty_names_are_dropped() {
        let table = SymbolTable::new(vec![
            symbol("memcpy@@GLIBC_2.14", 0x1000, 0x10, true),
            symbol("", 0x2000, 0x10, true),
            symbol("@weird", 0x3000, 0x10, true),
            symbol("at_zero", 0, 0x10, true),
        ]);
        assert_eq!(table.find(0x1000), Some("memcpy"));
        assert_eq!(table.find(0x2000), None);
        assert_eq!(table.find(0x3000), Some("@weird"));
        assert_eq!(table.find(0x5), None);
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        let table = SymbolTable::new(vec![symbol("everything", 0x1000, u64::MAX, true)]);
        assert_eq!(table.find(u64::MAX), Some("everything"));
    }
}
