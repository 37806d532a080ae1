use super::*;

const EPIPE: u32 = 32;
const EAGAIN: u32 = 11;

fn source(pid: u32, errno: u32) -> Source {
    Source {
        pid,
        fd: 4,
        errno,
        syscall: 1,
    }
}

fn writer(comm: &str) -> Writer {
    Writer {
        comm: comm.to_owned(),
        fd_kind: Some(TargetKind::Pipe),
        container: None,
    }
}

fn series(limits: SeriesLimits) -> (WriteErrorSeries, Instruments) {
    let instruments = Instruments::new();
    (
        WriteErrorSeries::new(limits, instruments.clone()),
        instruments,
    )
}

fn limits(labels: &str, max_series: usize, ttl: Duration) -> SeriesLimits {
    SeriesLimits {
        labels: labels.parse().unwrap(),
        max_series,
        ttl,
    }
}

/// The value of the series with exactly these labels.
fn value(instruments: &Instruments, labels: &[(&'static str, &str)]) -> Option<u64> {
    let labels: Labels = labels
        .iter()
        .map(|(name, value)| (*name, (*value).to_owned()))
        .collect();
    instruments
        .write_errors
        .get(&labels)
        .map(|counter| counter.get())
}

#[test]
fn label_lists_parse_and_unknown_labels_are_named() {
    let choice: LabelChoice = "comm, fd_kind,comm".parse().unwrap();
    assert_eq!(choice.0, vec![Label::Comm, Label::FdKind]);
    assert_eq!(
        LabelChoice::DEFAULT.parse::<LabelChoice>().unwrap().0,
        Label::ALL.to_vec()
    );
    assert!("".parse::<LabelChoice>().unwrap().0.is_empty());
    let err = "comm,pod".parse::<LabelChoice>().unwrap_err();
    assert_eq!(
        err,
        "unknown metrics label `pod` (use fd_kind, comm, k8s_namespace, k8s_pod, k8s_container)"
    );
}

#[test]
fn counts_follow_the_tally_and_never_go_back() {
    let (mut metrics, instruments) = series(limits("comm", 10, Duration::from_secs(60)));
    metrics.observe([(source(7, EPIPE), 3)], |_| writer("w"), false);
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", "w")]),
        Some(3)
    );
    metrics.observe(
        [(source(7, EPIPE), 5), (source(8, EPIPE), 2)],
        |_| writer("w"),
        false,
    );
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", "w")]),
        Some(7)
    );
    // Pid 7's entry is gone from the tally (folded at its exit): nothing goes back.
    metrics.observe([(source(8, EPIPE), 2)], |_| writer("w"), false);
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", "w")]),
        Some(7)
    );
    // It comes back smaller: counted afresh.
    metrics.observe([(source(7, EPIPE), 1)], |_| writer("w"), false);
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", "w")]),
        Some(8)
    );
    assert_eq!(metrics.series_count(), 1);
}

#[test]
fn a_first_count_waits_once_for_its_fd_kind() {
    let (mut metrics, instruments) = series(limits("fd_kind", 10, Duration::from_secs(60)));
    let unknown = |_| Writer {
        fd_kind: None,
        ..writer("w")
    };
    metrics.observe([(source(7, EPIPE), 1)], unknown, false);
    assert_eq!(metrics.series_count(), 0);
    metrics.observe([(source(7, EPIPE), 2)], |_| writer("w"), false);
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("fd_kind", "pipe")]),
        Some(2)
    );
    // Still unknown the second time, or at the end: counted as unknown.
    metrics.observe([(source(9, EPIPE), 1)], unknown, false);
    metrics.observe([(source(9, EPIPE), 1)], unknown, false);
    metrics.observe([(source(10, EPIPE), 4)], unknown, true);
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("fd_kind", "unknown")]),
        Some(5)
    );
}

#[test]
fn past_the_cap_new_label_sets_fold_into_other_and_are_counted() {
    let (mut metrics, instruments) = series(limits("comm", 2, Duration::from_secs(60)));
    let comms = ["a", "b", "c", "d"];
    for (pid, comm) in (1..).zip(comms) {
        metrics.observe(
            [(source(pid, EPIPE), u64::from(pid))],
            |_| writer(comm),
            false,
        );
    }
    metrics.observe([(source(5, EAGAIN), 10)], |_| writer("a"), false);
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", "a")]),
        Some(1)
    );
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", "b")]),
        Some(2)
    );
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", "c")]),
        None
    );
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", OTHER)]),
        Some(3 + 4)
    );
    assert_eq!(
        value(&instruments, &[("errno", "EAGAIN"), ("comm", OTHER)]),
        Some(10)
    );
    assert_eq!(instruments.series_folded.get(), 3);
    assert_eq!(metrics.series_count(), 2);
    // A folded label set stays folded (and is not counted again).
    metrics.observe([(source(3, EPIPE), 6)], |_| writer("c"), false);
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", OTHER)]),
        Some(10)
    );
    assert_eq!(instruments.series_folded.get(), 3);
}

#[test]
fn series_of_processes_gone_past_the_ttl_are_dropped() {
    let ttl = Duration::from_secs(5);
    let (mut metrics, instruments) = series(limits("comm", 1, ttl));
    let start = Instant::now();
    metrics.observe(
        [(source(1, EPIPE), 2), (source(2, EPIPE), 3)],
        |source| writer(if source.pid == 1 { "gone" } else { "live" }),
        false,
    );
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", "gone")]),
        Some(2)
    );
    metrics.process_exited(1, start);
    metrics.expire(start + ttl / 2);
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", "gone")]),
        Some(2)
    );
    metrics.expire(start + ttl);
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", "gone")]),
        None
    );
    assert_eq!(metrics.series_count(), 0);
    // Its entry is still in the tally: it is not counted again.
    metrics.observe(
        [(source(1, EPIPE), 2), (source(2, EPIPE), 3)],
        |source| writer(if source.pid == 1 { "gone" } else { "live" }),
        false,
    );
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", "gone")]),
        None
    );
    // A process whose exit no event told is found gone by the sweep.
    metrics.observe([(source(3, EPIPE), 1)], |_| writer("swept"), false);
    assert_eq!(metrics.series_count(), 1);
    metrics.sweep_gone(start + ttl, |pid| pid != 2 && pid != 3);
    metrics.expire(start + ttl * 2);
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", "swept")]),
        None
    );
    // The slot it freed takes the next new label set.
    metrics.observe([(source(4, EPIPE), 1)], |_| writer("new"), false);
    assert_eq!(
        value(&instruments, &[("errno", "EPIPE"), ("comm", "new")]),
        Some(1)
    );
}

#[test]
fn drop_counters_rise_to_their_totals() {
    let instruments = Instruments::new();
    instruments.dropped_total("ringbuf_full", 4);
    instruments.dropped_total("ringbuf_full", 3);
    instruments.dropped_total("ringbuf_full", 9);
    let counter = instruments
        .events_dropped
        .get(&[("reason", "ringbuf_full")])
        .unwrap()
        .get();
    assert_eq!(counter, 9);
    // The outputs' own running total: only what it grew by is added.
    instruments.output_dropped_total(7);
    instruments.output_dropped_total(9);
    assert_eq!(instruments.output_records_dropped.get(), 9);
}
