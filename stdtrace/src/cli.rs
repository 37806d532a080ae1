//! Command line: what the user typed ([`Cli`]) and the validated [`Config`] the rest of the
//! program sees.

use std::{
    ffi::OsString,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Parser, ValueEnum};

mod record;
mod report;

pub use self::{
    record::{RecordArgs, parse_size},
    report::{ReportArgs, TimeBound, parse_time_bound},
};
use crate::{
    aggregate::metrics::{LabelChoice, SeriesLimits},
    enrich::container::select::Selector,
    errno,
    kernel::loader::Hook,
    report::recording::Sink,
};

/// Why is this process stuck (or dying) while writing its output?
///
/// stdtrace reports every write (write, writev, pwrite64, pwritev, pwritev2) that fails with a
/// watched errno (EAGAIN and EPIPE by default), or blocks: who wrote, to which fd, what the fd
/// points at, who is on the other end, and the writer's call stack.
///
///   sudo stdtrace -- CMD ARGS...     launch CMD and trace it and every process it forks
///   sudo stdtrace --pid N [--pid M]  attach to running processes
///   sudo stdtrace                    trace every process on the host
///   sudo stdtrace record --output DIR ...   the same, kept in rotated files
///   stdtrace report DIR              read a recording back
#[derive(Debug, Parser)]
#[command(
    name = "stdtrace",
    version,
    verbatim_doc_comment,
    max_term_width = 100,
    args_conflicts_with_subcommands = true,
    subcommand_value_name = "COMMAND",
    subcommand_help_heading = "Commands (`trace` when none is given)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub subcommand: Option<Subcommand>,

    /// `trace`'s options, when no subcommand is given.
    #[command(flatten)]
    pub trace: TraceCommand,

    /// Log what stdtrace does to stderr; repeat for more detail.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Read procfs and the container runtimes' state from the host's filesystem mounted at
    /// DIR (DIR/proc, DIR/var/lib/containers, DIR/run/containerd, DIR/var/log/pods, ...): for
    /// stdtrace in a container as a node agent, with the host's pid namespace.
    #[arg(long, value_name = "DIR", env = "STDTRACE_HOST_ROOT", global = true)]
    pub host_root: Option<PathBuf>,
}

/// What stdtrace is asked to do.
#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Trace and report as it happens (the default).
    Trace(TraceCommand),
    /// Trace, and keep every record in JSON Lines files rotated by size and count.
    Record(RecordArgs),
    /// Read recorded files back: the same report as the live run, in wall time.
    Report(ReportArgs),
    /// Without BPF: every thread blocked writing right now, with its target, stack and
    /// goroutine (exit 0 when something was found, 1 when nothing, 2 on error).
    Snapshot(crate::snapshot::SnapshotArgs),
}

/// `stdtrace [trace]`: tracing's options, and one file to keep the records in.
#[derive(Debug, clap::Args)]
pub struct TraceCommand {
    #[command(flatten)]
    pub args: TraceArgs,

    /// Also write every record as JSON Lines to FILE (appended; reopened on SIGHUP, for
    /// logrotate).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// What to trace and how to report it: the options `trace` and `record` share.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// Trace this running process (all its threads, and the children it forks from now on).
    /// Repeat for more processes.
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "PID",
        conflicts_with = "command"
    )]
    pub pids: Vec<u32>,

    /// Trace the processes of this container: a full id, a unique id prefix, the runtime's
    /// name for it, or its name in its pod. Repeat for more. Filtered in the kernel on the
    /// container's cgroup v2, so a process that enters it later (`podman exec`, `kubectl
    /// exec`) is traced from its first write. With --pid or a command: those are traced too.
    #[arg(long = "container", value_name = "ID|NAME", value_parser = non_empty)]
    pub containers: Vec<String>,

    /// Trace the containers of this Kubernetes pod (from the runtime's `io.kubernetes.*`
    /// annotations); containers of it that start later are added within 2 seconds. Repeat
    /// for more.
    #[arg(long = "pod", value_name = "NAMESPACE/NAME", value_parser = Selector::pod)]
    pub pods: Vec<Selector>,

    /// Trace the containers of every pod in this Kubernetes namespace, as --pod does.
    #[arg(long = "namespace", value_name = "NS", value_parser = non_empty)]
    pub namespaces: Vec<String>,

    /// How to report: `text` for people, `json` for machines (JSON Lines on stdout).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Stop tracing after this long: `2` or `2s` (seconds), `500ms`, `1m`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// No per-event output; only the summary at the end.
    #[arg(short, long)]
    pub quiet: bool,

    /// Report writes blocked at least this long: when they return (`slow`), and while they are
    /// still blocked (`stuck`). `100ms`, `1s`, `2s`.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub slow: Duration,

    /// Report a write as stuck once it has been blocked this long without returning (default:
    /// the --slow threshold). A longer one keeps writes that are merely slow from being
    /// reported twice (stuck, then resumed).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stuck: Option<Duration>,

    /// Which write errors to catch, as errno names or numbers, comma-separated.
    #[arg(long, value_name = "LIST", default_value = "EAGAIN,EPIPE", value_parser = parse_errno_list)]
    pub errno: ErrnoList,

    /// When to colour text output: `auto` (only when stdout is a terminal and NO_COLOR is not
    /// set), `always`, `never`.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,

    /// Where to see the write family return: `tracepoint` (`syscalls:sys_exit_write` and its
    /// siblings; the cheapest unless writes are a large share of all syscalls) or `raw`
    /// (`raw_syscalls:sys_exit`, one program on every syscall). `cargo xtask bench` measures
    /// both.
    #[arg(long, value_enum, default_value_t = Hook::Tracepoint, value_name = "HOOK")]
    pub hook: Hook,

    /// Size of the ring buffer the kernel sends records through (a power of two, from 64KiB
    /// to 256MiB): its pages are mapped twice, so stdtrace's memory grows by twice this. Events
    /// it has no room for are counted (`dropped`), never lost from the totals.
    #[arg(long, value_name = "SIZE", default_value = "4MiB", value_parser = parse_ring_size)]
    pub ring_buffer: u32,

    /// Use this BTF file instead of the running kernel's (/sys/kernel/btf/vmlinux), e.g. one
    /// from btfhub for a kernel built without BTF.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,

    /// Serve Prometheus metrics on ADDR (`0.0.0.0:9464`, `127.0.0.1:9464`, `[::]:9464`):
    /// `/metrics` (OpenMetrics or the Prometheus text format, as the scraper asks) and
    /// `/healthz` (200 once the kernel programs are attached).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// The labels of `stdtrace_write_errors_total` besides `errno`, comma-separated, from
    /// fd_kind, comm, k8s_namespace, k8s_pod, k8s_container (empty: `errno` only).
    #[arg(long, value_name = "LIST", default_value = LabelChoice::DEFAULT)]
    pub metrics_labels: LabelChoice,

    /// Series of `stdtrace_write_errors_total` at most; past it, new label sets are counted in
    /// one series whose labels are `other` (per errno), and in
    /// `stdtrace_metrics_series_folded_total`.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub metrics_max_series: usize,

    /// Drop the metric series of processes gone for this long: `30s`, `5m`, `1h`.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub metrics_ttl: Duration,

    /// The command to launch and trace, with its arguments, after `--`.
    #[arg(value_name = "CMD", last = true)]
    pub command: Vec<OsString>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// The errnos to watch, in the order given, without repeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrnoList(pub Vec<u32>);

/// `1.5s` as `(1.5, "s")`: the leading number and what follows it, trimmed; `None` when it does
/// not start with a number. Durations and sizes are both written this way.
pub(crate) fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit.trim()))
}

/// Parses `2`, `2s`, `1.5s`, `500ms`, `250us`, `1m`, `1h`.
/// A ring-buffer size: a size (`4MiB`) that is a power of two from 64KiB to 256MiB.
pub fn parse_ring_size(text: &str) -> Result<u32, String> {
    let bytes = parse_size(text)?;
    if !bytes.is_power_of_two() || !(64 << 10..=256 << 20).contains(&bytes) {
        return Err(format!(
            "{text}: the ring buffer is a power of two from 64KiB to 256MiB"
        ));
    }
    u32::try_from(bytes).map_err(|_| format!("{text}: too large"))
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (value, unit) = number_and_unit(text)
        .ok_or_else(|| format!("`{text}` is not a duration (try 2, 2s, 500ms)"))?;
    let scale = match unit {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ms, s, m or h)"
            ));
        }
    };
    let seconds = value * scale;
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 1e9 {
        return Err(format!("`{text}` is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `--container`, `--pod` and `--namespace` as one list (a union).
pub fn selectors(
    containers: Vec<String>,
    pods: Vec<Selector>,
    namespaces: Vec<String>,
) -> Vec<Selector> {
    containers
        .into_iter()
        .map(Selector::Container)
        .chain(pods)
        .chain(namespaces.into_iter().map(Selector::Namespace))
        .collect()
}

/// A container id, name or namespace: not empty (an empty id prefix would match them all).
pub fn non_empty(text: &str) -> Result<String, String> {
    match text.trim() {
        "" => Err("an empty name matches nothing".to_owned()),
        text => Ok(text.to_owned()),
    }
}

/// Parses `EAGAIN,EPIPE,28`.
pub fn parse_errno_list(text: &str) -> Result<ErrnoList, String> {
    let mut list = Vec::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let number = errno::parse(item).ok_or_else(|| format!("unknown errno `{item}`"))?;
        if !list.contains(&number) {
            list.push(number);
        }
    }
    if list.is_empty() {
        return Err("the errno list is empty".to_owned());
    }
    Ok(ErrnoList(list))
}

/// Which processes to trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Start this program (already resolved on PATH) with these arguments (`argv[0]` first).
    Launch {
        program: PathBuf,
        argv: Vec<OsString>,
    },
    /// Attach to these running processes (process ids, not thread ids).
    Attach { pids: Vec<u32> },
    /// Every process on the host.
    NodeWide,
}

/// The validated configuration the rest of stdtrace works from.
#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    /// `--container`, `--pod`, `--namespace`: containers traced besides `mode`'s processes
    /// (alone: instead of every process).
    pub containers: Vec<Selector>,
    pub format: Format,
    pub duration: Option<Duration>,
    pub quiet: bool,
    pub errnos: Vec<u32>,
    pub slow: Duration,
    pub stuck: Duration,
    pub color: bool,
    pub btf: PathBuf,
    pub hook: Hook,
    /// Bytes of the kernel's ring buffer.
    pub ring_bytes: u32,
    /// `-v`s given (set by `main`).
    pub verbose: u8,
    /// Where to keep every record as well (`record --output DIR`, `--output FILE`).
    pub recording: Option<Recording>,
    /// Where to serve `/metrics`, and its series' limits (`--metrics`).
    pub metrics: Option<MetricsConfig>,
}

/// `--metrics ADDR` and the options that bound its series.
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    pub addr: SocketAddr,
    pub limits: SeriesLimits,
}

/// A recording asked for: where, and the command line to put in each file's header.
#[derive(Clone, Debug)]
pub struct Recording {
    pub sink: Sink,
    pub options: Vec<String>,
}

impl Recording {
    /// With the command line stdtrace was started with.
    pub fn new(sink: Sink) -> Self {
        Self {
            sink,
            options: std::env::args_os()
                .skip(1)
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect(),
        }
    }
}

/// Errors in what the user asked for.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no process with pid {0}")]
    NoSuchProcess(u32),
    #[error("pid {0} is not a valid process id")]
    InvalidPid(u32),
    #[error("{0}: command not found")]
    CommandNotFound(String),
    #[error("{0}: is a directory")]
    CommandIsDirectory(String),
    #[error("{0}: permission denied (not an executable file)")]
    CommandNotExecutable(String),
}

impl Config {
    /// Checks the command line against the system: pids exist, the command can be run.
    pub fn from_trace(
        cli: TraceArgs,
        recording: Option<Recording>,
        stdout_is_terminal: bool,
        no_color: bool,
    ) -> Result<Self, ConfigError> {
        let mode = if !cli.command.is_empty() {
            let program = resolve_command(&cli.command[0])?;
            Mode::Launch {
                program,
                argv: cli.command,
            }
        } else if !cli.pids.is_empty() {
            let mut pids = Vec::new();
            for pid in cli.pids {
                let tgid = process_id_of(pid)?;
                if tgid != pid {
                    log::info!("pid {pid} is a thread of process {tgid}; tracing process {tgid}");
                }
                if !pids.contains(&tgid) {
                    pids.push(tgid);
                }
            }
            Mode::Attach { pids }
        } else {
            Mode::NodeWide
        };
        let color = match cli.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => stdout_is_terminal && !no_color,
        };
        let containers = selectors(cli.containers, cli.pods, cli.namespaces);
        Ok(Config {
            mode,
            containers,
            format: cli.format,
            duration: cli.duration,
            quiet: cli.quiet,
            errnos: cli.errno.0,
            slow: cli.slow,
            stuck: cli.stuck.unwrap_or(cli.slow).max(cli.slow),
            color: color && cli.format == Format::Text,
            btf: cli
                .btf
                .unwrap_or_else(|| PathBuf::from(crate::kernel::btf::VMLINUX_BTF)),
            hook: cli.hook,
            ring_bytes: cli.ring_buffer,
            verbose: 0,
            recording,
            metrics: cli.metrics.map(|addr| MetricsConfig {
                addr,
                limits: SeriesLimits {
                    labels: cli.metrics_labels,
                    max_series: cli.metrics_max_series,
                    ttl: cli.metrics_ttl,
                },
            }),
        })
    }
}

/// The process (thread group) a pid or tid belongs to.
fn process_id_of(pid: u32) -> Result<u32, ConfigError> {
    if pid == 0 || pid > i32::MAX as u32 {
        return Err(ConfigError::InvalidPid(pid));
    }
    let status = std::fs::read_to_string(crate::process::host::host().pid_path(pid, "status"))
        .map_err(|_| ConfigError::NoSuchProcess(pid))?;
    let tgid = crate::process::status::field(&status, "Tgid")
        .and_then(|value| value.parse().ok())
        .ok_or(ConfigError::NoSuchProcess(pid))?;
    Ok(tgid)
}

/// Finds the program to run: a path with a slash as given, a bare name on PATH, as a shell would.
pub fn resolve_command(name: &OsString) -> Result<PathBuf, ConfigError> {
    let display = name.to_string_lossy().into_owned();
    let path = Path::new(name);
    if display.contains('/') {
        return check_executable(path, &display).map(|()| path.to_path_buf());
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut not_executable = None;
    for dir in std::env::split_paths(&search) {
        let candidate = dir.join(path);
        match check_executable(&candidate, &display) {
            Ok(()) => return Ok(candidate),
            Err(ConfigError::CommandNotFound(_)) => {}
            Err(err) => not_executable = not_executable.or(Some(err)),
        }
    }
    Err(not_executable.unwrap_or(ConfigError::CommandNotFound(display)))
}

fn check_executable(path: &Path, display: &str) -> Result<(), ConfigError> {
    let metadata =
        std::fs::metadata(path).map_err(|_| ConfigError::CommandNotFound(display.to_owned()))?;
    if metadata.is_dir() {
        return Err(ConfigError::CommandIsDirectory(display.to_owned()));
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        return Err(ConfigError::CommandNotExecutable(display.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("stdtrace").chain(args.iter().copied()))
    }

    /// `trace`'s options, given without a subcommand.
    fn cli(args: &[&str]) -> Result<TraceArgs, clap::Error> {
        let parsed = parse(args)?;
        assert!(parsed.subcommand.is_none());
        Ok(parsed.trace.args)
    }

    #[test]
    fn host_root_for_every_subcommand() {
        // Node agents set STDTRACE_HOST_ROOT in their environment; not set for unit tests.
        if std::env::var_os("STDTRACE_HOST_ROOT").is_some() {
            return;
        }
        let host = Some(PathBuf::from("/host"));
        assert_eq!(parse(&["--host-root", "/host"]).unwrap().host_root, host);
        assert_eq!(parse(&[]).unwrap().host_root, None);
        let snapshot = parse(&["snapshot", "--host-root", "/host", "--pid", "1"]).unwrap();
        assert!(matches!(snapshot.subcommand, Some(Subcommand::Snapshot(_))));
        assert_eq!(snapshot.host_root, host);
        let record = parse(&["record", "--output", "/tmp/r", "--host-root", "/host"]).unwrap();
        assert_eq!(record.host_root, host);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_ring_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_ring_size("64KiB"), Ok(64 << 10));
        for bad in ["3MiB", "32KiB", "512MiB", "4MB", "x"] {
            assert!(parse_ring_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        for bad in ["", "s", "-1", "0", "2 parsecs", "1e999", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errno_lists() {
        assert_eq!(parse_errno_list("EAGAIN,EPIPE").unwrap().0, vec![11, 32]);
        assert_eq!(
            parse_errno_list("eagain, EPIPE,EIO,ENOSPC,EPIPE")
                .unwrap()
                .0,
            vec![11, 32, 5, 28]
        );
        let err = parse_errno_list("EPIPE,EFOO").unwrap_err();
        assert_eq!(err, "unknown errno `EFOO`");
        assert!(parse_errno_list(",").is_err());
    }

    #[test]
    fn options_parse() {
        let parsed = cli(&[
            "--format",
            "json",
            "--duration",
            "500ms",
            "-q",
            "--errno",
            "EIO",
        ])
        .unwrap();
        assert_eq!(parsed.format, Format::Json);
        assert_eq!(parsed.duration, Some(Duration::from_millis(500)));
        assert!(parsed.quiet);
        assert_eq!(parsed.errno.0, vec![5]);
        assert!(parsed.command.is_empty() && parsed.pids.is_empty());

        let parsed = parse(&["-v", "--", "sh", "-c", "echo hi"]).unwrap();
        assert_eq!(parsed.trace.args.command, vec!["sh", "-c", "echo hi"]);
        assert_eq!(parsed.verbose, 1);
        let parsed = cli(&["--pid", "1", "--pid", "2"]).unwrap();
        assert_eq!(parsed.pids, vec![1, 2]);

        assert!(cli(&["--pid", "1", "--", "true"]).is_err());
        assert!(cli(&["--format", "xml"]).is_err());
        assert!(cli(&["--errno", "EWHAT"]).is_err());
        assert!(cli(&["--pid", "abc"]).is_err());
    }

    #[test]
    fn metrics_options_parse() {
        let parsed = cli(&[
            "--metrics",
            "0.0.0.0:9464",
            "--metrics-labels",
            "comm,k8s_pod",
            "--metrics-max-series",
            "10",
            "--metrics-ttl",
            "30s",
        ])
        .unwrap();
        assert_eq!(parsed.metrics, Some("0.0.0.0:9464".parse().unwrap()));
        assert_eq!(
            parsed.metrics_labels.0,
            vec![
                crate::aggregate::metrics::Label::Comm,
                crate::aggregate::metrics::Label::K8sPod
            ]
        );
        assert_eq!(parsed.metrics_max_series, 10);
        assert_eq!(parsed.metrics_ttl, Duration::from_secs(30));
        let parsed = cli(&["--metrics", "[::1]:9464"]).unwrap();
        assert_eq!(parsed.metrics_max_series, 2000);
        assert_eq!(parsed.metrics_ttl, Duration::from_secs(300));
        assert_eq!(parsed.metrics_labels.0.len(), 5);
        let err = cli(&["--metrics", ":9464", "--metrics-labels", "pod"]).unwrap_err();
        assert!(err.to_string().contains("invalid socket address"), "{err}");
        let err = cli(&["--metrics-labels", "comm,pod"]).unwrap_err();
        assert!(
            err.to_string().contains("unknown metrics label `pod`"),
            "{err}"
        );
        assert!(cli(&["--metrics-ttl", "0"]).is_err());
    }

    #[test]
    fn subcommands_parse_and_trace_is_the_default() {
        let parsed = parse(&["trace", "--pid", "3", "--output", "/tmp/t.jsonl"]).unwrap();
        let Some(Subcommand::Trace(trace)) = parsed.subcommand else {
            panic!("trace");
        };
        assert_eq!(trace.args.pids, vec![3]);
        assert_eq!(trace.output, Some(PathBuf::from("/tmp/t.jsonl")));
        let parsed = parse(&["--output", "/tmp/t.jsonl", "-q"]).unwrap();
        assert!(parsed.subcommand.is_none() && parsed.trace.args.quiet);
        assert_eq!(parsed.trace.output, Some(PathBuf::from("/tmp/t.jsonl")));

        let parsed = parse(&[
            "record",
            "-o",
            "/var/st",
            "--max-size",
            "16KiB",
            "--slow",
            "2s",
            "-v",
            "--",
            "app",
        ])
        .unwrap();
        let Some(Subcommand::Record(record)) = parsed.subcommand else {
            panic!("record");
        };
        assert_eq!(
            (record.output, record.max_size, record.max_files),
            (PathBuf::from("/var/st"), 16 * 1024, 5)
        );
        assert_eq!(record.trace.slow, Duration::from_secs(2));
        assert_eq!(record.trace.command, vec!["app"]);
        assert_eq!(parsed.verbose, 1);
        let parsed = parse(&["record", "-o", "d"]).unwrap();
        let Some(Subcommand::Record(record)) = parsed.subcommand else {
            panic!("record");
        };
        assert_eq!(record.max_size, 100 * 1024 * 1024, "default 100MiB");
        assert!(parse(&["record", "-o", "d", "--max-files", "0"]).is_err());
        assert!(
            parse(&["record", "--", "app"]).is_err(),
            "--output is required"
        );

        let parsed = parse(&[
            "report",
            "a",
            "-",
            "--pid",
            "4",
            "--type",
            "sigpipe,repeats",
            "--since",
            "5m",
        ])
        .unwrap();
        let Some(Subcommand::Report(report)) = parsed.subcommand else {
            panic!("report");
        };
        assert_eq!(report.files, vec![PathBuf::from("a"), PathBuf::from("-")]);
        assert_eq!(report.types, vec!["sigpipe", "repeats"]);
        assert_eq!(
            report.since,
            Some(TimeBound::BeforeEnd(Duration::from_secs(300)))
        );
        assert!(parse(&["report"]).is_err(), "a file is required");

        // An unknown option is an error naming it, not the command to launch.
        let err = parse(&["--pdi", "5"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
        assert!(err.to_string().contains("'--pdi'"), "{err}");
        let err = parse(&["--formt", "json"]).unwrap_err();
        assert!(err.to_string().contains("'--format'"), "{err}");
        // Options of trace and a subcommand do not mix.
        assert!(parse(&["--pid", "1", "report", "x"]).is_err());
    }

    #[test]
    fn container_selectors_add_to_pids_and_commands() {
        let own = std::process::id().to_string();
        let config = Config::from_trace(
            cli(&[
                "--pid",
                &own,
                "--container",
                "web-1",
                "--pod",
                "prod/web-0",
                "--namespace",
                "dev",
                "--container",
                "3f2a",
            ])
            .unwrap(),
            None,
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            config.mode,
            Mode::Attach {
                pids: vec![std::process::id()]
            }
        );
        assert_eq!(
            config.containers,
            vec![
                Selector::Container("web-1".into()),
                Selector::Container("3f2a".into()),
                Selector::pod("prod/web-0").unwrap(),
                Selector::Namespace("dev".into()),
            ]
        );
        // With a command too: they are not exclusive.
        assert!(cli(&["--container", "web-1", "--", "true"]).is_ok());
        for bad in [
            &["--pod", "web-0"][..],
            &["--pod", "prod/"],
            &["--container", ""],
            &["--namespace", " "],
        ] {
            assert!(cli(bad).is_err(), "{bad:?}");
        }
        let report = match parse(&["report", "x", "--pod", "prod/web-0", "--container", "a"])
            .unwrap()
            .subcommand
        {
            Some(Subcommand::Report(report)) => report,
            other => panic!("{other:?}"),
        };
        assert_eq!(report.containers, vec!["a"]);
        assert_eq!(report.pods, vec![Selector::pod("prod/web-0").unwrap()]);
    }

    #[test]
    fn config_checks_pids_and_commands() {
        let config = Config::from_trace(
            cli(&["--", "sh", "-c", "true"]).unwrap(),
            None,
            false,
            false,
        )
        .unwrap();
        match config.mode {
            Mode::Launch { program, argv } => {
                assert!(program.ends_with("sh"));
                assert_eq!(argv.len(), 3);
            }
            other => panic!("{other:?}"),
        }
        let own = std::process::id().to_string();
        let config = Config::from_trace(cli(&["--pid", &own]).unwrap(), None, true, false).unwrap();
        assert_eq!(
            config.mode,
            Mode::Attach {
                pids: vec![std::process::id()]
            }
        );
        assert!(config.color);
        let config = Config::from_trace(cli(&[]).unwrap(), None, true, true).unwrap();
        assert_eq!(config.mode, Mode::NodeWide);
        assert!(!config.color, "NO_COLOR turns off auto colour");

        let err = Config::from_trace(cli(&["--pid", "2147483000"]).unwrap(), None, false, false)
            .unwrap_err();
        assert_eq!(err.to_string(), "no process with pid 2147483000");
        let err = Config::from_trace(
            cli(&["--", "no-such-command-xyz"]).unwrap(),
            None,
            false,
            false,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "no-such-command-xyz: command not found");
        let plain = std::env::temp_dir().join(format!("stdtrace-plain-{}", std::process::id()));
        std::fs::write(&plain, "not a program").unwrap();
        let plain_arg = plain.to_str().unwrap();
        let err =
            Config::from_trace(cli(&["--", plain_arg]).unwrap(), None, false, false).unwrap_err();
        std::fs::remove_file(&plain).unwrap();
        assert!(matches!(err, ConfigError::CommandNotExecutable(_)), "{err}");
        let err =
            Config::from_trace(cli(&["--", "/tmp"]).unwrap(), None, false, false).unwrap_err();
        assert!(matches!(err, ConfigError::CommandIsDirectory(_)), "{err}");
    }
}
