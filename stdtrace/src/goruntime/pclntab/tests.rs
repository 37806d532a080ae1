//! The pc-line table parser on synthetic tables of every format: the only way to exercise
//! Go 1.16–1.17 tables, for which no toolchain is installed here.

use super::*;

const ADDRESS: u64 = 0x10_0000;
const TEXT: u64 = 0x40_1000;

fn put_varint(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A pc-value table from `(value delta, pc delta)` pairs.
fn pc_table(pairs: &[(i32, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (delta, pc_delta) in pairs {
        let zigzag = if *delta < 0 {
            ((!*delta as u32) << 1) | 1
        } else {
            (*delta as u32) << 1
        };
        put_varint(&mut out, zigzag);
        put_varint(&mut out, *pc_delta);
    }
    out.push(0);
    out
}

fn align(data: &mut Vec<u8>, to: usize) {
    while !data.len().is_multiple_of(to) {
        data.push(0);
    }
}

fn put_u32(data: &mut Vec<u8>, value: u32) {
    data.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(data: &mut Vec<u8>, value: u64) {
    data.extend_from_slice(&value.to_le_bytes());
}

/// A two-function table in `format`: `main.f` at TEXT (0x20 bytes, with `main.inl`
/// inlined at [8, 12)), `main.g` at TEXT + 0x20 (0x10 bytes, in another file).
fn build(format: PclntabFormat) -> Vec<u8> {
    let magic: u32 = match format {
        PclntabFormat::Go116 => 0xffff_fffa,
        PclntabFormat::Go118 => 0xffff_fff0,
        PclntabFormat::Go120 => 0xffff_fff1,
    };
    let words = if format == PclntabFormat::Go116 { 7 } else { 8 };
    let mut data = Vec::new();
    put_u32(&mut data, magic);
    data.extend_from_slice(&[0, 0, 1, 8]);
    data.resize(8 + words * 8, 0);

    let funcnametab = data.len();
    data.extend_from_slice(b"main.f\0main.g\0main.inl\0");
    align(&mut data, 4);
    let cutab = data.len();
    put_u32(&mut data, 0);
    put_u32(&mut data, 5);
    let filetab = data.len();
    data.extend_from_slice(b"a.go\0b.go\0");
    let pctab = data.len();
    data.push(0);
    let mut table = |pairs: &[(i32, u32)]| {
        let offset = (data.len() - pctab) as u32;
        data.extend_from_slice(&pc_table(pairs));
        offset
    };
    let f_sp = table(&[(1, 4), (16, 0x1c)]);
    let f_file = table(&[(1, 0x20)]);
    let f_line = table(&[(11, 8), (1, 0x18)]);
    let f_inline = table(&[(0, 8), (1, 4), (-1, 0x14)]);
    let g_sp = table(&[(1, 0x10)]);
    let g_file = table(&[(2, 0x10)]);
    let g_line = table(&[(21, 0x10)]);
    align(&mut data, 8);

    let functab = data.len();
    let entry_size = if format == PclntabFormat::Go116 {
        16
    } else {
        8
    };
    let records_at = functab + 3 * entry_size;
    data.resize(records_at, 0);
    let header_size = format.record_header_size(8);
    let record = |data: &mut Vec<u8>,
                  entry: u64,
                  name: u32,
                  tables: [u32; 3],
                  pcdata: &[u32],
                  funcdata: &[Option<u64>]|
     -> usize {
        align(data, 8);
        let at = data.len();
        if format == PclntabFormat::Go116 {
            put_u64(data, entry);
        } else {
            put_u32(data, (entry - TEXT) as u32);
        }
        put_u32(data, name);
        put_u32(data, 0); // args
        put_u32(data, 0); // deferreturn
        for table in tables {
            put_u32(data, table);
        }
        put_u32(data, pcdata.len() as u32);
        put_u32(data, 0); // cuOffset
        if format == PclntabFormat::Go120 {
            put_u32(data, 9); // startLine
        }
        data.extend_from_slice(&[0, 0, 0, funcdata.len() as u8]);
        assert_eq!(data.len() - at, header_size);
        for offset in pcdata {
            put_u32(data, *offset);
        }
        if format == PclntabFormat::Go116 {
            align(data, 8);
            for pointer in funcdata {
                put_u64(data, pointer.unwrap_or(0));
            }
        } else {
            for offset in funcdata {
                put_u32(data, offset.map_or(u32::MAX, |o| o as u32));
            }
        }
        at - functab
    };
    // The inlining tree goes after the records; its address is patched in below.
    let f_record = record(
        &mut data,
        TEXT,
        0,
        [f_sp, f_file, f_line],
        &[0, 0, f_inline, 0],
        &[None, None, None, Some(0)],
    );
    let g_record = record(&mut data, TEXT + 0x20, 7, [g_sp, g_file, g_line], &[], &[]);
    align(&mut data, 8);
    let tree = data.len();
    if format == PclntabFormat::Go120 {
        data.extend_from_slice(&[0, 0, 0, 0]);
        put_u32(&mut data, 14); // nameOff: main.inl
        put_u32(&mut data, 4); // parentPc
        put_u32(&mut data, 30); // startLine
    } else {
        data.extend_from_slice(&(-1i16).to_le_bytes());
        data.extend_from_slice(&[0, 0]);
        put_u32(&mut data, 0); // file
        put_u32(&mut data, 10); // line
        put_u32(&mut data, 14); // func_: main.inl
        put_u32(&mut data, 4); // parentPc
    }
    // Patch main.f's inlining tree funcdata: the last slot of its record.
    let slot_end = functab + f_record + header_size + 4 * 4;
    let slot_end = if format == PclntabFormat::Go116 {
        let aligned = (slot_end + 7) & !7;
        aligned + 4 * 8
    } else {
        slot_end + 4 * 4
    };
    if format == PclntabFormat::Go116 {
        let pointer = ADDRESS + tree as u64;
        data[slot_end - 8..slot_end].copy_from_slice(&pointer.to_le_bytes());
    } else {
        // Relative to gofunc, which the tests set to the table's own address.
        data[slot_end - 4..slot_end].copy_from_slice(&(tree as u32).to_le_bytes());
    }

    // The function table.
    let entries = [(TEXT, f_record), (TEXT + 0x20, g_record), (TEXT + 0x30, 0)];
    for (i, (entry, record)) in entries.iter().enumerate() {
        let at = functab + i * entry_size;
        if format == PclntabFormat::Go116 {
            data[at..at + 8].copy_from_slice(&entry.to_le_bytes());
            data[at + 8..at + 16].copy_from_slice(&(*record as u64).to_le_bytes());
        } else {
            data[at..at + 4].copy_from_slice(&((entry - TEXT) as u32).to_le_bytes());
            data[at + 4..at + 8].copy_from_slice(&(*record as u32).to_le_bytes());
        }
    }

    // The header's words.
    let mut header = vec![2u64, 2];
    if format != PclntabFormat::Go116 {
        header.push(TEXT);
    }
    header.extend([funcnametab, cutab, filetab, pctab, functab].map(|o| o as u64));
    for (i, word) in header.iter().enumerate() {
        data[8 + i * 8..16 + i * 8].copy_from_slice(&word.to_le_bytes());
    }
    data
}

fn parse(data: &[u8]) -> Result<Pclntab<'_>, GoError> {
    let mut table = Pclntab::parse_bytes(data, ADDRESS, None)?;
    if table.format() != PclntabFormat::Go116 {
        table.gofunc = Some(ADDRESS);
    }
    Ok(table)
}

fn frame(function: &str, file: &str, line: u32, inlined: bool) -> Frame {
    Frame {
        function: function.to_owned(),
        file: Some(file.to_owned()),
        line: Some(line),
        inlined,
    }
}

#[test]
fn reads_every_format() {
    for format in [
        PclntabFormat::Go116,
        PclntabFormat::Go118,
        PclntabFormat::Go120,
    ] {
        let data = build(format);
        let table = parse(&data).unwrap_or_else(|err| panic!("{format:?}: {err}"));
        assert_eq!(table.format(), format);
        assert_eq!(table.func_count(), 2);
        assert_eq!(table.text_range(), Some((TEXT, TEXT + 0x30)));

        let f = table.find_func(TEXT + 5).unwrap();
        assert_eq!(
            (f.name.as_str(), f.entry, f.end),
            ("main.f", TEXT, TEXT + 0x20)
        );
        let expected_start = (format == PclntabFormat::Go120).then_some(9);
        assert_eq!(f.start_line, expected_start, "{format:?}");
        let g = table.find_func(TEXT + 0x2f).unwrap();
        assert_eq!((g.name.as_str(), g.entry), ("main.g", TEXT + 0x20));
        assert_eq!(table.func_by_name("main.g"), Some(g.clone()));
        assert_eq!(
            table.find_func(TEXT + 0x30),
            Err(Reason::PcOutsideText { pc: TEXT + 0x30 })
        );
        assert_eq!(
            table.find_func(TEXT - 1),
            Err(Reason::PcOutsideText { pc: TEXT - 1 })
        );

        assert_eq!(table.file_line(&f, TEXT + 9), Ok(("a.go".to_owned(), 11)));
        assert_eq!(
            table.file_line(&g, TEXT + 0x21),
            Ok(("b.go".to_owned(), 20))
        );
        assert_eq!(table.sp_delta(TEXT), Ok(0));
        assert_eq!(table.sp_delta(TEXT + 4), Ok(16));
        assert_eq!(table.sp_delta(TEXT + 0x25), Ok(0));

        assert_eq!(
            table.frames(TEXT + 9),
            Ok(vec![
                frame("main.inl", "a.go", 11, true),
                frame("main.f", "a.go", 10, false),
            ]),
            "{format:?}"
        );
        assert_eq!(
            table.frames(TEXT + 12),
            Ok(vec![frame("main.f", "a.go", 11, false)])
        );
        assert_eq!(
            table.frames(TEXT + 0x20),
            Ok(vec![frame("main.g", "b.go", 20, false)])
        );
    }
}

#[test]
fn truncated_and_flipped_synthetic_tables_fail_cleanly() {
    for format in [
        PclntabFormat::Go116,
        PclntabFormat::Go118,
        PclntabFormat::Go120,
    ] {
        let data = build(format);
        // The intact table parses and names its functions: the loops below really reach the
        // parser's lookups, rather than failing at the header every time.
        let intact = parse(&data).unwrap_or_else(|err| panic!("{format:?}: {err}"));
        assert_eq!(
            intact.func_by_name("main.g").map(|g| g.entry),
            Some(TEXT + 0x20),
            "{format:?}"
        );
        assert_eq!(
            intact.frames(TEXT + 9),
            Ok(vec![
                frame("main.inl", "a.go", 11, true),
                frame("main.f", "a.go", 10, false),
            ]),
            "{format:?}"
        );
        assert_eq!(intact.sp_delta(TEXT + 4), Ok(16), "{format:?}");
        let pcs: Vec<u64> = (TEXT - 1..TEXT + 0x31).collect();
        let exercise = |table: &Pclntab<'_>| {
            for pc in &pcs {
                let _ = table.frames(*pc);
                let _ = table.sp_delta(*pc);
                let _ = table.func_by_name("main.g");
            }
        };
        for len in 0..data.len() {
            if let Ok(table) = parse(&data[..len]) {
                exercise(&table);
            }
        }
        let mut copy = data.clone();
        for at in 0..data.len() {
            for bit in [0x01, 0x80] {
                copy[at] ^= bit;
                if let Ok(table) = parse(&copy) {
                    exercise(&table);
                }
                copy[at] ^= bit;
            }
        }
    }
}

#[test]
fn magic_numbers() {
    assert_eq!(
        PclntabFormat::from_magic(0xffff_fff1),
        Ok(PclntabFormat::Go120)
    );
    assert_eq!(
        PclntabFormat::from_magic(0xffff_fff0),
        Ok(PclntabFormat::Go118)
    );
    assert_eq!(
        PclntabFormat::from_magic(0xffff_fffa),
        Ok(PclntabFormat::Go116)
    );
    assert_eq!(
        PclntabFormat::from_magic(0xffff_fffb),
        Err(GoError::TooOld { magic: 0xffff_fffb })
    );
    assert!(PclntabFormat::from_magic(0x7f45_4c46).is_err());
}
