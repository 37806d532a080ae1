//! `stdtrace snapshot`'s command line: which processes to look at, and how to report.

use clap::Args;

use crate::{
    cli::{ColorChoice, Format},
    enrich::container::select::Selector,
};

/// Report every thread blocked in a write right now, from procfs and the process's memory,
/// without BPF, and exit: 0 when something is blocked, 1 when nothing is, 2 on error.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotArgs {
    /// A process to look at (all its threads). Repeat for more; without any, every process on
    /// the host.
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// The processes of this running container (found from their cgroups in procfs: a full
    /// id, a unique id prefix, the runtime's name, or its name in its pod). Repeat for more;
    /// with --pid, those are looked at too.
    #[arg(long = "container", value_name = "ID|NAME", value_parser = crate::cli::non_empty)]
    pub containers: Vec<String>,

    /// The processes of this Kubernetes pod's running containers. Repeat for more.
    #[arg(long = "pod", value_name = "NAMESPACE/NAME", value_parser = Selector::pod)]
    pub pods: Vec<Selector>,

    /// The processes of the running containers of pods in this Kubernetes namespace.
    #[arg(long = "namespace", value_name = "NS", value_parser = crate::cli::non_empty)]
    pub namespaces: Vec<String>,

    /// Also list every goroutine of each Go process, with its status, wait reason and stack
    /// (a goroutine dump without SIGQUIT).
    #[arg(long)]
    pub goroutines: bool,

    /// How to report: `text` for people, `json` for machines (JSON Lines on stdout).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// When to colour text output: `auto` (only when stdout is a terminal and NO_COLOR is not
    /// set), `always`, `never`.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
}

impl SnapshotArgs {
    /// Whether text output is coloured, by the `--color` rule `trace` follows.
    pub fn color(&self, stdout_is_terminal: bool, no_color: bool) -> bool {
        self.format == Format::Text
            && match self.color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => stdout_is_terminal && !no_color,
            }
    }
}
