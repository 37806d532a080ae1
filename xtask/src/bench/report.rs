//! The report's tables, in Markdown.

use std::fmt::Write as _;

use serde_json::Value;

use super::{tracer::Tracer, write_path::Load};

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// The report, in Markdown.
pub(super) fn markdown(report: &Value) -> String {
    let mut md = String::new();
    let machine = &report["machine"];
    let _ = writeln!(
        md,
        "### stdtrace benchmark{}\n",
        if report["quick"] == true {
            " (quick)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "Machine: {} ({} CPUs, {} GiB), Linux {}; {}. Loads pinned to CPU {}; median of {} interleaved rounds.\n",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cpus"],
        machine["memory_gib"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["bpftrace"].as_str().unwrap_or("bpftrace ?"),
        report["load_cpu"],
        report["scale"]["rounds"],
    );
    let _ = writeln!(
        md,
        "**1. Write path**: ns added per operation (median of each round's difference with no tracer).\n"
    );
    let _ = writeln!(
        md,
        "| load | no tracer (ns/op) | floor | stdtrace | bpftrace | stdtrace ÷ floor | stdtrace ÷ bpftrace | floor (raw hook) | stdtrace --hook raw |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for load in Load::ALL {
        let figures = &report["write_path"][load.key()];
        let added = |tracer: Tracer| number(&figures[tracer.name()]["added_ns"]);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} |",
            load.name(),
            number(&figures["none"]["ns_per_op"]),
            added(Tracer::Floor),
            added(Tracer::Stdtrace),
            added(Tracer::Bpftrace),
            added(Tracer::Stdtrace) / added(Tracer::Floor),
            added(Tracer::Stdtrace) / added(Tracer::Bpftrace),
            added(Tracer::FloorRaw),
            added(Tracer::StdtraceRaw),
        );
    }
    let storm = &report["storm"];
    let _ = writeln!(
        md,
        "\n**2. Storm**: two processes (one per CPU) failing writes as fast as they can for {} s under `stdtrace --format json`, node-wide. stdtrace's CPU time is its own (all threads), from the writers' start to 1.5 s after they stop, as a share of one core over the storm; peak RSS is its high-water mark, start-up included.\n",
        storm["seconds"]
    );
    let _ = writeln!(
        md,
        "| matched per second | writers' own count | summary's count | exact | records written | dropped | stdtrace CPU (% of one core) | stdtrace peak RSS |"
    );
    let _ = writeln!(
        md,
        "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
    );
    let _ = writeln!(
        md,
        "| {:.0} | {} | {} | {} | {} | {} | {:.1} % | {:.1} MiB |",
        number(&storm["matched_per_second"]),
        storm["writers_failed"],
        storm["summary_failed"],
        if storm["exact"] == true {
            "yes"
        } else {
            "**no**"
        },
        storm["records"],
        storm["dropped"],
        number(&storm["stdtrace_cpu_percent_of_one_core"]),
        number(&storm["stdtrace_peak_rss_mib"]),
    );
    let _ = writeln!(
        md,
        "\n**3. Symbolization**: from the failed write to its report with every frame named (cold: page cache dropped first; warm: median of 3).\n"
    );
    let _ = writeln!(
        md,
        "| binary | size | frames | cold: after the event | cold: from start | warm: after the event | warm: from start |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for case in report["symbolization"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {:.1} MiB | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            case["binary"].as_str().unwrap_or("?"),
            number(&case["size_mib"]),
            case["frames"],
            number(&case["cold_after_event_ms"]),
            number(&case["cold_from_start_ms"]),
            number(&case["warm_after_event_ms"]),
            number(&case["warm_from_start_ms"]),
        );
    }
    let _ = writeln!(
        md,
        "\n**4. Start-up**: from launch to attached (BTF read, programs loaded and attached), node-wide: {:.0} ms (median).",
        number(&report["startup"]["to_attached_ms"])
    );
    let snapshot = &report["snapshot"];
    let _ = writeln!(
        md,
        "\n**5. Snapshot** (no BPF; median of 5): node-wide with {} processes on the host ({} blocked writing): {:.0} ms; `--goroutines` of a Go program with {} goroutines: {:.0} ms.",
        snapshot["node_wide"]["processes"],
        snapshot["node_wide"]["blocked_writes"],
        number(&snapshot["node_wide"]["median_ms"]),
        snapshot["goroutine_dump"]["goroutines"],
        number(&snapshot["goroutine_dump"]["median_ms"]),
    );
    md
}
