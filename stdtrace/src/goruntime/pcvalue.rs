//! Go's pc-value tables: for each range of pcs in a function, one value (a stack pointer
//! delta, a file number, a line, an inlining index...).
//!
//! A table is a run of pairs of unsigned varints: a zig-zag encoded value delta, then a pc
//! delta in units of the instruction size quantum. The value starts at -1 and the pc at the
//! function's entry; a value delta of 0 after the first pair ends the table. Each pair says
//! "from the previous pc up to this new pc, the value is this".

/// Why a table could not be read to an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcValueMiss {
    /// The table ends before covering the pc.
    NotCovered,
    /// The table's bytes run out, or a varint does not fit.
    Corrupt,
}

/// Reads a Go (uint32) unsigned varint at `*pos`, advancing it.
fn read_varint(table: &[u8], pos: &mut usize) -> Option<u32> {
    let mut value = 0u32;
    let mut shift = 0u32;
    loop {
        let byte = *table.get(*pos)?;
        *pos += 1;
        if shift == 28 && byte > 0x0f {
            return None;
        }
        value |= u32::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
}

/// The value at `target` in the table starting at `table[0]`, for a function starting at
/// `entry`. `quantum` is the minimum instruction size (1 on x86).
pub fn value_at(table: &[u8], entry: u64, target: u64, quantum: u8) -> Result<i32, PcValueMiss> {
    let mut pos = 0;
    let mut pc = entry;
    let mut value: i32 = -1;
    let mut first = true;
    if target < entry {
        return Err(PcValueMiss::NotCovered);
    }
    loop {
        let encoded = read_varint(table, &mut pos).ok_or(PcValueMiss::Corrupt)?;
        if encoded == 0 && !first {
            return Err(PcValueMiss::NotCovered);
        }
        first = false;
        let delta = if encoded & 1 != 0 {
            !(encoded >> 1) as i32
        } else {
            (encoded >> 1) as i32
        };
        let pc_delta = read_varint(table, &mut pos).ok_or(PcValueMiss::Corrupt)?;
        pc = pc
            .checked_add(u64::from(pc_delta) * u64::from(quantum.max(1)))
            .ok_or(PcValueMiss::Corrupt)?;
        value = value.wrapping_add(delta);
        if target < pc {
            return Ok(value);
        }
    }
}

/// Every `(start pc, end pc, value)` range in the table, in order: for tests and for callers
/// that want all the pcs where a value holds. Stops at the first corrupt byte.
pub fn ranges(table: &[u8], entry: u64, quantum: u8) -> Vec<(u64, u64, i32)> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut pc = entry;
    let mut value: i32 = -1;
    let mut first = true;
    while let Some(encoded) = read_varint(table, &mut pos) {
        if encoded == 0 && !first {
            break;
        }
        first = false;
        let delta = if encoded & 1 != 0 {
            !(encoded >> 1) as i32
        } else {
            (encoded >> 1) as i32
        };
        let Some(pc_delta) = read_varint(table, &mut pos) else {
            break;
        };
        let Some(end) = pc.checked_add(u64::from(pc_delta) * u64::from(quantum.max(1))) else {
            break;
        };
        value = value.wrapping_add(delta);
        out.push((pc, end, value));
        pc = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes `(value delta, pc delta)` pairs as Go's linker does.
    fn encode(pairs: &[(i32, u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |mut v: u32| loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        };
        for (delta, pc_delta) in pairs {
            let zigzag = if *delta < 0 {
                ((!*delta as u32) << 1) | 1
            } else {
                (*delta as u32) << 1
            };
            put(zigzag);
            put(*pc_delta);
        }
        put(0);
        out
    }

    #[test]
    fn looks_up_values_by_pc() {
        // -1 → 0 for [0x100, 0x104), → 8 for [0x104, 0x120), → 0 for [0x120, 0x121).
        let table = encode(&[(1, 4), (8, 0x1c), (-8, 1)]);
        assert_eq!(value_at(&table, 0x100, 0x100, 1), Ok(0));
        assert_eq!(value_at(&table, 0x100, 0x103, 1), Ok(0));
        assert_eq!(value_at(&table, 0x100, 0x104, 1), Ok(8));
        assert_eq!(value_at(&table, 0x100, 0x11f, 1), Ok(8));
        assert_eq!(value_at(&table, 0x100, 0x120, 1), Ok(0));
        assert_eq!(
            value_at(&table, 0x100, 0x121, 1),
            Err(PcValueMiss::NotCovered)
        );
        assert_eq!(
            value_at(&table, 0x100, 0xff, 1),
            Err(PcValueMiss::NotCovered)
        );
        assert_eq!(
            ranges(&table, 0x100, 1),
            vec![(0x100, 0x104, 0), (0x104, 0x120, 8), (0x120, 0x121, 0)]
        );
    }

    #[test]
    fn a_first_zero_delta_does_not_end_the_table() {
        // The first value delta may be 0 (value -1, e.g. "not inlined").
        let table = encode(&[(0, 6), (1, 2)]);
        assert_eq!(value_at(&table, 0, 5, 1), Ok(-1));
        assert_eq!(value_at(&table, 0, 7, 1), Ok(0));
    }

    #[test]
    fn truncated_and_oversized_varints_are_corrupt() {
        let table = encode(&[(1, 4), (8, 0x1c)]);
        for len in 0..table.len() - 1 {
            let result = value_at(&table[..len], 0, 0x1f, 1);
            assert_eq!(result, Err(PcValueMiss::Corrupt), "truncated to {len}");
        }
        assert_eq!(
            value_at(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 0, 0, 1),
            Err(PcValueMiss::Corrupt)
        );
    }
}
