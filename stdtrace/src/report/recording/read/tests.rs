use super::*;
use crate::report::record::samples;

fn lines(records: &[String]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for record in records {
        bytes.extend_from_slice(record.as_bytes());
        bytes.push(b'\n');
    }
    bytes
}

fn sample_lines() -> Vec<String> {
    let header = r#"{"type":"header","schema":1,"stdtrace":"0.1.0","recording":"1-2","file":0,"kernel":"6.18.0","node":"n","host":"h","boot_id":"b","options":["record"],"wall_minus_monotonic_ns":1000,"ts_ns":1}"#;
    vec![
        header.to_owned(),
        serde_json::to_string(&samples::report()).unwrap(),
    ]
}

#[test]
fn records_read_back_equal_what_was_written() {
    let parsed = parse_records(&lines(&sample_lines())).unwrap();
    assert_eq!(parsed.lines.len(), 2);
    assert!(matches!(parsed.lines[0].record, Record::Header(_)));
    let Record::Write(write) = &parsed.lines[1].record else {
        panic!("{:?}", parsed.lines[1]);
    };
    assert_eq!(**write, samples::report());
    // And serialized again, the same line.
    assert_eq!(
        serde_json::to_string(&**write).unwrap(),
        parsed.lines[1].text
    );
}

#[test]
fn newer_fields_and_types_are_read_and_unknown_types_counted() {
    let mut records = sample_lines();
    records[1] = records[1].replacen('{', r#"{"container":{"id":"abc"},"#, 1);
    records.push(r#"{"type":"snapshot_thread","pid":1}"#.to_owned());
    let parsed = parse_records(&lines(&records)).unwrap();
    assert_eq!((parsed.lines.len(), parsed.unknown_types), (2, 1));
    assert!(
        parsed.lines[1].text.contains("container"),
        "passed through as recorded"
    );
}

#[test]
fn a_truncated_last_line_is_skipped_and_said() {
    let mut bytes = lines(&sample_lines());
    let full = bytes.len();
    bytes.extend_from_slice(br#"{"type":"write_error","ts_ns":5,"pid"#);
    let parsed = parse_records(&bytes).unwrap();
    assert_eq!(parsed.lines.len(), 2);
    assert_eq!(parsed.truncated, Some(bytes.len() - full));
}

#[test]
fn bad_input_gets_one_clear_error() {
    assert_eq!(parse_records(b"").unwrap_err(), ReadError::Empty);
    assert_eq!(parse_records(b"\n\n").unwrap_err(), ReadError::Empty);
    let err = parse_records(b"hello world\n").unwrap_err();
    assert!(matches!(err, ReadError::NotJson { line: 1, .. }), "{err}");
    assert!(err.to_string().starts_with("line 1: not JSON"), "{err}");
    assert_eq!(
        parse_records(b"[1,2]\n").unwrap_err(),
        ReadError::NotRecord { line: 1 }
    );
    let err = parse_records(b"{\"type\":\"write_error\",\"pid\":\"x\"}\n").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("line 1: a `write_error` record this stdtrace cannot read"),
        "{err}"
    );
    let future = sample_lines()[0].replace(r#""schema":1"#, r#""schema":7"#);
    let err = parse_records(&lines(&[future])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "recorded by stdtrace 0.1.0 in format 7; this stdtrace reads format 1: use a newer stdtrace"
    );
    // Cut short in its only line: nothing to read.
    assert!(parse_records(br#"{"type":"head"#).is_err());
}

/// Hostile input never panics: every prefix, byte flips, and random bytes (a small
/// deterministic generator; the fuzz target, where there is one, goes further).
#[test]
fn hostile_input_never_panics() {
    let good = lines(&sample_lines());
    for end in 0..good.len() {
        let _ = parse_records(&good[..end]);
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let mut bytes = good.clone();
        for _ in 0..(next() % 8 + 1) {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        let _ = parse_records(&bytes);
        let random: Vec<u8> = (0..(next() % 64)).map(|_| next() as u8).collect();
        let _ = parse_records(&random);
    }
    let deep = "[".repeat(100_000);
    let _ = parse_records(deep.as_bytes());
}
