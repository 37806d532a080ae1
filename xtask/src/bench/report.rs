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
        "Load average (1, 5, 15 min) before and after each part: {}\n",
        report["load_average"]
    );
    if !report["write"].is_null() {
        write_path(&mut md, report);
    }
    if report["write"].is_null() && !report["programs"].is_null() {
        programs_md(&mut md, &report["programs"], &Value::Null);
    }
    if !report["storm"].is_null() {
        storm(&mut md, report);
    }
    if !report["symbolization"].is_null() {
        symbolization(&mut md, report);
    }
    if !report["startup"].is_null() {
        let _ = writeln!(
            md,
            "\n**4. Start-up**: from launch to attached (BTF read, programs loaded and attached), node-wide: {:.0} ms (median).",
            number(&report["startup"]["to_attached_ms"])
        );
    }
    if !report["snapshot"].is_null() {
        snapshot(&mut md, report);
    }
    if !report["soak"].is_null() {
        soak(&mut md, report);
    }
    if !report["report"].is_null() {
        recording(&mut md, report);
    }
    md
}

fn write_path(md: &mut String, report: &Value) {
    let _ = writeln!(
        md,
        "**1. Write path**: ns added per operation (median of each round's difference with no tracer; stdtrace's first and third quartiles over rounds in brackets).\n"
    );
    let _ = writeln!(
        md,
        "| load | no tracer (ns/op) | floor | stdtrace | bpftrace | stdtrace ÷ floor | (median of rounds' ratios) | stdtrace ÷ bpftrace | floor (raw hook) | stdtrace --hook raw |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for load in Load::ALL {
        let figures = &report["write"][load.key()];
        let stdtrace = &figures[Tracer::Stdtrace.name()];
        let added = |tracer: Tracer| number(&figures[tracer.name()]["added_ns"]);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} [{:.0}, {:.0}] | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} |",
            load.name(),
            number(&figures["none"]["ns_per_op"]),
            added(Tracer::Floor),
            added(Tracer::Stdtrace),
            number(&stdtrace["added_p25_ns"]),
            number(&stdtrace["added_p75_ns"]),
            added(Tracer::Bpftrace),
            added(Tracer::Stdtrace) / added(Tracer::Floor),
            number(&stdtrace["ratio_to_floor_median"]),
            added(Tracer::Stdtrace) / added(Tracer::Bpftrace),
            added(Tracer::FloorRaw),
            added(Tracer::StdtraceRaw),
        );
    }
    let programs = &report["write"]["program_time"];
    if programs.is_null() {
        programs_md(md, &report["programs"], &report["write"]);
    } else {
        programs_md(md, programs, &report["write"]);
    }
}

/// The programs' own time per operation that succeeds, floor against stdtrace.
fn programs_md(md: &mut String, programs: &Value, write: &Value) {
    if programs.is_null() {
        return;
    }
    for load in [Load::Good, Load::SendGood] {
        let floor = number(&programs[Tracer::Floor.name()][load.key()]["ns_per_run"]);
        let ours = number(&programs[Tracer::Stdtrace.name()][load.key()]["ns_per_run"]);
        let floor_added = number(&write[load.key()][Tracer::Floor.name()]["added_ns"]);
        let _ = writeln!(
            md,
            "\nPrograms' own time per run, {} (`kernel.bpf_stats_enabled`, median of rounds; the stats' own cost is in both): floor {floor:.1} ns, stdtrace {ours:.1} ns: {:.1} ns more{}.",
            load.name(),
            ours - floor,
            if floor_added.is_finite() {
                format!(
                    ", which on this run's floor of {floor_added:.0} ns added would be {:.2}× the floor",
                    (floor_added + ours - floor) / floor_added
                )
            } else {
                String::new()
            },
        );
    }
}

fn storm(md: &mut String, report: &Value) {
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
    let peak = &storm["sampled_peak"];
    let _ = writeln!(
        md,
        "\nResident after attaching: {:.1} MiB. At the largest resident set sampled (every 20 ms): {:.1} MiB, of which {:.1} MiB anonymous; largest mappings then: {}.",
        number(&storm["stdtrace_rss_attached_mib"]),
        number(&peak["rss_mib"]),
        number(&peak["anonymous_mib"]),
        peak["largest_mib"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|pair| format!(
                "{} {:.1} MiB",
                pair[0].as_str().unwrap_or("?"),
                number(&pair[1])
            ))
            .collect::<Vec<_>>()
            .join(", "),
    );
}

fn symbolization(md: &mut String, report: &Value) {
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
}

fn snapshot(md: &mut String, report: &Value) {
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
}

fn or_na(value: &Value) -> String {
    if value.is_null() {
        "n/a".to_owned()
    } else {
        value.to_string()
    }
}

fn soak(md: &mut String, report: &Value) {
    let soak = &report["soak"];
    let _ = writeln!(
        md,
        "\n**6. Soak**: node-wide for {} s while short-lived processes each fail writes from their own new pid ({:.0} a second; {}).\n",
        soak["seconds"],
        number(&soak["processes_per_second"]),
        soak["churn"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(md, "| seconds | stdtrace RSS |");
    let _ = writeln!(md, "| ---: | ---: |");
    for point in soak["rss_mib"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {}{} | {:.1} MiB |",
            point["seconds"],
            if point["after_churn"] == true {
                " (churn over)"
            } else {
                ""
            },
            number(&point["rss_mib"]),
        );
    }
    let _ = writeln!(
        md,
        "\nRSS growth after the first minute: {} MiB. stdtrace CPU: {:.1} % of one core. Events dropped: {} ({:.3} % of failed writes); lifecycle events dropped: {} ({:.3} % of ~3 per process); tally full: {}. Tracked processes at the end: {}.",
        soak["rss_growth_after_first_minute_mib"]
            .as_f64()
            .map_or("n/a".to_owned(), |mib| format!("{mib:.1}")),
        number(&soak["stdtrace_cpu_percent_of_one_core"]),
        soak["dropped"],
        100.0 * number(&soak["dropped_share"]),
        soak["lifecycle_dropped"],
        100.0 * number(&soak["lifecycle_dropped_share"]),
        soak["tally_full"],
        or_na(&soak["tracked_processes"]),
    );
    let binary = &soak["summary_binary_totals"];
    let _ = writeln!(
        md,
        "\n| count | processes' own | summary per pid (live processes) | summary per binary |\n| --- | ---: | ---: | ---: |\n| EPIPE | {} | {} | {} |\n| EAGAIN | {} | {} | {} |\n\nSummary `failed_writes` (node-wide, other processes' too): {}.",
        soak["own_epipe"],
        soak["summary_pid_totals"]["epipe"],
        or_na(&binary["epipe"]),
        soak["own_eagain"],
        soak["summary_pid_totals"]["eagain"],
        or_na(&binary["eagain"]),
        soak["summary_failed_writes"],
    );
}

fn recording(md: &mut String, report: &Value) {
    let recording = &report["report"];
    let figures = &recording["report"];
    let _ = writeln!(
        md,
        "\n**7. Report of a recording**: `stdtrace report` of a {:.0} MiB recording ({} records), median of 3: text {:.0} ms (peak RSS {:.0} MiB), `--format json` {:.0} ms (peak RSS {:.0} MiB).",
        number(&recording["file_mib"]),
        recording["records"],
        number(&figures["text"]["median_ms"]),
        number(&figures["text"]["peak_rss_mib"]),
        number(&figures["json"]["median_ms"]),
        number(&figures["json"]["peak_rss_mib"]),
    );
}
