//! `--metrics`, as root, with real programs: a real Prometheus scrapes stdtrace while a C
//! writer fails an exact number of writes, and its query API returns that number; promtool
//! accepts the Prometheus text; OpenMetrics is served when asked for. The series cap folds
//! new label sets into `other` and counts them; the series of an exited process go after the
//! TTL; `/healthz` answers once the programs are attached.

#[path = "support/can_run.rs"]
mod can_run;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/prometheus.rs"]
mod prometheus;
#[path = "support/stdtrace.rs"]
mod stdtrace;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use can_run::Need;
use prometheus::{PROMETHEUS, PROMTOOL, Prometheus, free_port, get, wait_for_ok};
use serde_json::Value;
use stdtrace::{Lines, StderrLines, field, json_lines, summary};

/// The C writer: `failing_writes EPIPES EAGAINS [--hold]`.
fn c_writer() -> PathBuf {
    fixtures::build_c(
        "writers/failing_writes.c",
        "failing_writes-fp",
        &["-O1", "-g", "-fno-omit-frame-pointer"],
    )
}

/// Its comm: the file name, cut to 15 bytes by the kernel.
const WRITER_COMM: &str = "failing_writes-";

fn can_run() -> bool {
    can_run::require(Need::Root)
        && can_run::require(Need::Program(Path::new(PROMETHEUS)))
        && can_run::require(Need::Program(Path::new(PROMTOOL)))
}

/// stdtrace, running with `--metrics` on a free port; killed (by its pid) if the test fails
/// before it ends.
struct Traced {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stderr: StderrLines,
    stdout: Option<Lines>,
    port: u16,
}

impl Traced {
    /// Starts `stdtrace --metrics 127.0.0.1:PORT --format json -q OPTIONS -- COMMAND` and waits
    /// until it traces.
    fn start(options: &[&str], command: &[&str]) -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec!["--metrics", &addr, "--format", "json", "-q"];
        args.extend_from_slice(options);
        args.push("--");
        args.extend_from_slice(command);
        let mut child = stdtrace::command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting stdtrace");
        let mut stderr = StderrLines::new(child.stderr.take().unwrap());
        let stdout = Lines::new(child.stdout.take().unwrap());
        let stdin = child.stdin.take();
        stderr.wait_for("stdtrace: tracing", Duration::from_secs(30));
        Self {
            child: Some(child),
            stdin,
            stderr,
            stdout: Some(stdout),
            port,
        }
    }

    /// A line to the command's stdin (inherited from stdtrace's).
    fn tell(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// The Prometheus text on `/metrics` now.
    fn scrape(&self) -> String {
        let response = get(self.port, "/metrics", None).expect("scraping /metrics");
        assert_eq!(response.status, 200, "{}", response.body);
        response.body
    }

    /// Waits until the scraped text satisfies `done`, and returns it.
    fn scrape_until(&self, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.scrape();
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "/metrics did not get there within {limit:?}:\n{text}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends the command a last line and closes its stdin (it ends), waits for stdtrace to
    /// end, and returns its summary.
    fn finish(mut self) -> Value {
        if let Some(mut stdin) = self.stdin.take() {
            // The command may be gone already (EPIPE).
            let _ = stdin.write_all(b"\n");
        }
        let mut child = self.child.take().unwrap();
        let status = wait_with_limit(&mut child, Duration::from_secs(30));
        let lines = self.stdout.take().unwrap().all(Duration::from_secs(5));
        assert!(status.success(), "stdtrace: {status:?}");
        let records = json_lines(lines.join("\n").as_bytes());
        summary(&records).clone()
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

fn wait_with_limit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for stdtrace") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "stdtrace did not end within {limit:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the `stdtrace_write_errors_total` series whose labels include all of `labels`
/// (`name="value"` each), summed; None if there is none.
fn write_errors(text: &str, labels: &[&str]) -> Option<u64> {
    sample_sum(text, "stdtrace_write_errors_total{", labels)
}

fn sample_sum(text: &str, prefix: &str, labels: &[&str]) -> Option<u64> {
    let values: Vec<u64> = text
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter(|line| {
            let set = line.split('}').next().unwrap_or_default();
            labels.iter().all(|label| {
                set.contains(&format!("{{{label}")) || set.contains(&format!(",{label}"))
            })
        })
        .map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("not a sample: {line}"))
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The value of an unlabelled counter.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// The failures of `errno` in the summary's totals for `pid`.
fn summary_total(summary: &Value, pid: u32, errno: &str) -> u64 {
    summary["totals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|total| total["pid"] == pid && total["errno"] == errno)
        .map(|total| total["failures"].as_u64().unwrap())
        .sum()
}

#[test]
fn prometheus_scrapes_the_exact_count_of_failed_writes() {
    if !can_run() {
        return;
    }
    const EPIPES: u64 = 7;
    const EAGAINS: u64 = 3;
    let writer = c_writer();
    let mut traced = Traced::start(
        &[],
        &[
            writer.to_str().unwrap(),
            &EPIPES.to_string(),
            &EAGAINS.to_string(),
            "--hold",
        ],
    );
    let prometheus = Prometheus::start(traced.port);
    let line = traced
        .stderr
        .wait_for("failing_writes: pid=", Duration::from_secs(20));
    let pid = field(&line, "pid");
    traced.tell("go\n");

    // Prometheus's own query API, over what it scraped every second.
    let query = format!(
        "sum(stdtrace_write_errors_total{{errno=\"EPIPE\",comm=\"{WRITER_COMM}\",fd_kind=\"pipe\"}})"
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    let epipes = loop {
        let result = prometheus.query(&query);
        if let Some((_, value)) = result.first()
            && *value >= EPIPES as f64
        {
            break *value;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw {EPIPES} EPIPEs: {result:?}; targets {}; log {}",
            prometheus.targets(),
            prometheus.log()
        );
        thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(epipes, EPIPES as f64);
    let eagains = prometheus.query(&format!(
        "stdtrace_write_errors_total{{errno=\"EAGAIN\",comm=\"{WRITER_COMM}\"}}"
    ));
    assert_eq!(eagains.len(), 1, "{eagains:?}");
    assert_eq!(eagains[0].1, EAGAINS as f64, "{eagains:?}");
    assert_eq!(eagains[0].0["fd_kind"], "pipe", "{eagains:?}");
    assert_eq!(eagains[0].0["job"], "stdtrace", "{eagains:?}");
    // The build info came through too (Prometheus asks for OpenMetrics first).
    let build = prometheus.query("stdtrace_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(
        build[0].0["version"],
        env!("CARGO_PKG_VERSION"),
        "{build:?}"
    );

    // The classic text passes promtool; OpenMetrics ends with # EOF.
    let text = traced.scrape();
    for reason in [
        "ringbuf_full",
        "lifecycle_dropped",
        "blocked_dropped",
        "blocked_untracked",
        "tally_full",
        "sites_full",
        "parked_full",
        "mapping_records_lost",
    ] {
        assert_eq!(
            sample_sum(
                &text,
                "stdtrace_events_dropped_total{",
                &[&format!("reason=\"{reason}\"")]
            ),
            Some(0),
            "{text}"
        );
    }
    // The writer ignores SIGPIPE: one story told, `ignored`.
    assert_eq!(
        sample_sum(&text, "stdtrace_sigpipe_total{", &["fate=\"ignored\""]),
        Some(1),
        "{text}"
    );
    assert!(
        text.contains("stdtrace_blocked_writes{state=\"stuck\"} 0"),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    let mut promtool = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let classic = get(traced.port, "/metrics", Some("text/plain")).unwrap();
    assert!(
        classic.headers.contains("text/plain; version=0.0.4"),
        "{}",
        classic.headers
    );
    assert!(!classic.body.contains("# EOF"));
    let open = get(
        traced.port,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    )
    .unwrap();
    assert_eq!(open.status, 200);
    assert!(
        open.headers.contains("application/openmetrics-text"),
        "{}",
        open.headers
    );
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
    assert!(
        open.body.contains(&format!(
            "stdtrace_write_errors_total{{errno=\"EPIPE\",fd_kind=\"pipe\",comm=\"{WRITER_COMM}\""
        )),
        "{}",
        open.body
    );
    // The same numbers as the summary's totals.
    traced.tell("exit\n");
    let summary = traced.finish();
    assert_eq!(summary_total(&summary, pid, "EPIPE"), EPIPES, "{summary}");
    assert_eq!(summary_total(&summary, pid, "EAGAIN"), EAGAINS, "{summary}");
    drop(prometheus);
}

#[test]
fn past_the_series_cap_label_sets_fold_into_other() {
    if !can_run::require(Need::Root) {
        return;
    }
    // Four writers of their own names (comms), each failing 2 writes with EPIPE.
    let dir = std::env::temp_dir().join(format!("stdtrace-metrics-cap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let names = ["mw-a", "mw-b", "mw-c", "mw-d"];
    let mut script = String::new();
    for name in names {
        let copy = dir.join(name);
        std::fs::copy(c_writer(), &copy).unwrap();
        script.push_str(&format!("{} 2 0; ", copy.display()));
    }
    script.push_str("read line");
    let traced = Traced::start(
        &["--metrics-labels", "comm", "--metrics-max-series", "2"],
        &["sh", "-c", &script],
    );
    let text = traced.scrape_until(Duration::from_secs(30), |text| {
        let counted: u64 = names
            .iter()
            .filter_map(|name| write_errors(text, &[&format!("comm=\"{name}\"")]))
            .sum::<u64>()
            + write_errors(text, &["comm=\"other\""]).unwrap_or(0);
        counted == 8
    });
    let own: Vec<u64> = names
        .iter()
        .filter_map(|name| write_errors(&text, &[&format!("comm=\"{name}\"")]))
        .collect();
    assert_eq!(own, [2, 2], "two series of their own:\n{text}");
    assert_eq!(
        write_errors(&text, &["errno=\"EPIPE\"", "comm=\"other\""]),
        Some(4),
        "{text}"
    );
    assert_eq!(
        counter(&text, "stdtrace_metrics_series_folded_total"),
        2,
        "{text}"
    );
    // Only errno and comm: the labels asked for.
    assert!(
        text.lines()
            .filter(|line| line.starts_with("stdtrace_write_errors_total{"))
            .all(|line| !line.contains("fd_kind") && !line.contains("k8s_")),
        "{text}"
    );
    let summary = traced.finish();
    assert_eq!(summary["failed_writes"], 8, "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_series_of_an_exited_process_go_after_the_ttl() {
    if !can_run::require(Need::Root) {
        return;
    }
    let writer = c_writer();
    let script = format!("{} 3 0; read line", writer.display());
    let traced = Traced::start(
        &["--metrics-labels", "comm", "--metrics-ttl", "2s"],
        &["sh", "-c", &script],
    );
    let comm = format!("comm=\"{WRITER_COMM}\"");
    let seen = Instant::now();
    traced.scrape_until(Duration::from_secs(30), |text| {
        write_errors(text, &["errno=\"EPIPE\"", &comm]) == Some(3)
    });
    // The writer has exited (its shell waits on stdin): within the TTL and a second's update
    // or two, its series is gone, while stdtrace still runs.
    let text = traced.scrape_until(Duration::from_secs(20), |text| {
        write_errors(text, &[&comm]).is_none()
    });
    assert!(
        seen.elapsed() >= Duration::from_millis(1500),
        "gone before the TTL"
    );
    assert!(text.contains("stdtrace_build_info"), "{text}");
    let summary = traced.finish();
    assert_eq!(summary["failed_writes"], 3, "{summary}");
}

#[test]
fn healthz_answers_once_the_programs_are_attached() {
    if !can_run::require(Need::Root) {
        return;
    }
    // Traced::start returns once stdtrace says it traces: the programs are attached.
    let traced = Traced::start(&[], &["sh", "-c", "read line"]);
    let health = get(traced.port, "/healthz", None).expect("/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(get(traced.port, "/nothing", None).unwrap().status, 404);
    wait_for_ok(traced.port, "/metrics", Duration::from_secs(5));
    let summary = traced.finish();
    assert_eq!(summary["failed_writes"], 0, "{summary}");
}

#[test]
fn stalled_scrapers_never_delay_tracing() {
    if !can_run::require(Need::Root) {
        return;
    }
    const EPIPES: u64 = 200;
    let writer = c_writer();
    let mut traced = Traced::start(
        &[],
        &[writer.to_str().unwrap(), &EPIPES.to_string(), "0", "--hold"],
    );
    // Scrapers that ask and ask again, never reading an answer, and some that connect and
    // never ask.
    let mut stalled = Vec::new();
    for _ in 0..6 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", traced.port)).unwrap();
        let request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64);
        stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ = stream.write_all(request.as_bytes());
        stalled.push(stream);
    }
    for _ in 0..4 {
        stalled.push(std::net::TcpStream::connect(("127.0.0.1", traced.port)).unwrap());
    }
    let line = traced
        .stderr
        .wait_for("failing_writes: pid=", Duration::from_secs(20));
    let pid = field(&line, "pid");
    traced.tell("go\n");
    // Tracing and a scraper that reads go on, exact.
    let comm = format!("comm=\"{WRITER_COMM}\"");
    traced.scrape_until(Duration::from_secs(20), |text| {
        write_errors(text, &["errno=\"EPIPE\"", &comm]) == Some(EPIPES)
    });
    traced.tell("exit\n");
    let summary = traced.finish();
    assert_eq!(summary_total(&summary, pid, "EPIPE"), EPIPES, "{summary}");
    assert_eq!(summary["dropped"], 0, "{summary}");
    drop(stalled);
}
