//! Runtime processes on the other end of a container's stdio, by what they are and what their
//! command line says:
//!
//! - conmon (CRI-O, podman) reads the container's stdout and stderr pipes and writes its log:
//!   `conmon --api-version 1 -c <id> -u <id> ... -l k8s-file:<log> ...` (`--cid`, `--log-path`
//!   are the long forms);
//! - `containerd-shim-runc-v2 -namespace <ns> -id <id> -address <sock>` holds the container's
//!   stdio and copies it to the FIFOs containerd reads (with the CRI plugin, one shim serves
//!   a whole pod, and `-id` is the sandbox's);
//! - containerd (its CRI plugin) and dockerd read those FIFOs and pipes and write the logs.
//!
//! Where the output goes is read from the runtime process's fds: a log file it has open for
//! writing, or a stdio FIFO it forwards to.

use std::{os::unix::fs::FileTypeExt, path::Path};

use crate::{
    process::{host::HostRoot, status},
    report::record::{OutputSink, Runtime},
};

/// What a runtime process is, from its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeProcess {
    /// What it does with a container's output (`container log reader`, ...).
    pub role: &'static str,
    pub runtime: Option<Runtime>,
    /// The container it serves, when its command line names it.
    pub container_id: Option<String>,
    /// The log file named on its command line (conmon's `-l k8s-file:PATH`).
    pub log_path: Option<String>,
}

/// What `comm` and the NUL-separated `cmdline` say this process is, if a runtime process.
pub fn classify(comm: &str, cmdline: &[u8]) -> Option<RuntimeProcess> {
    let args: Vec<String> = cmdline
        .split(|byte| *byte == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let program = args
        .first()
        .and_then(|arg0| Path::new(arg0).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    // comm is cut at 15 bytes: `containerd-shim` for every shim.
    let is = |name: &str| program == name || comm == name;
    if is("conmon") {
        let log_path = option(&args, &["-l", "--log-path"]).map(|log| {
            // `k8s-file:PATH`, `journald:...`, or a bare path (CRI-O's).
            match log.split_once(':') {
                Some((driver, path)) if !driver.contains('/') => path.to_owned(),
                _ => log,
            }
        });
        // podman tells conmon to run `podman ... container cleanup` on exit; CRI-O does not.
        let podman = args.iter().any(|arg| {
            Path::new(arg)
                .file_name()
                .is_some_and(|name| name == "podman")
        });
        return Some(RuntimeProcess {
            role: "container log reader",
            runtime: Some(if podman {
                Runtime::Podman
            } else {
                Runtime::CriO
            }),
            container_id: option(&args, &["-c", "--cid"]),
            log_path: log_path.filter(|path| path.starts_with('/')),
        });
    }
    if program.starts_with("containerd-shim") || comm.starts_with("containerd-shim") {
        return Some(RuntimeProcess {
            role: "container stdio relay",
            runtime: Some(Runtime::Containerd),
            container_id: option(&args, &["-id", "--id"]),
            log_path: None,
        });
    }
    let daemon = match () {
        _ if is("containerd") => Runtime::Containerd,
        _ if is("dockerd") => Runtime::Docker,
        _ if is("crio") => Runtime::CriO,
        _ => return None,
    };
    Some(RuntimeProcess {
        role: "container log writer",
        runtime: Some(daemon),
        container_id: None,
        log_path: None,
    })
}

/// The value of the first of `names` in `args`: `-c ID`, `--cid ID` or `--cid=ID`.
fn option(args: &[String], names: &[&str]) -> Option<String> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        for name in names {
            if arg == name {
                return args.next().cloned();
            }
            if let Some(value) = arg
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
            {
                return Some(value.to_owned());
            }
        }
    }
    None
}

/// Reads what `/proc/PID` says of a process, under the host root.
pub fn of_process(root: &HostRoot, pid: u32) -> Option<RuntimeProcess> {
    let proc = root.pid(pid);
    let comm = std::fs::read(proc.join("comm")).ok()?;
    let comm = String::from_utf8_lossy(&comm);
    let cmdline = std::fs::read(proc.join("cmdline")).ok()?;
    classify(comm.trim_end(), &cmdline)
}

/// Where a runtime process sends a container's output, from its fds: log files it has open
/// for writing, and the containers' stdio FIFOs (containerd's `.../io/<n>/<id>-stdout`).
pub fn sinks(root: &HostRoot, pid: u32, container_id: Option<&str>) -> Vec<OutputSink> {
    let dir = root.pid_path(pid, "fd");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut sinks = Vec::new();
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|fd| fd.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let path = link.to_string_lossy().into_owned();
        if !path.starts_with('/') {
            continue;
        }
        let mentions_container = container_id.is_none_or(|id| path.contains(id));
        let Ok(metadata) = std::fs::metadata(entry.path()) else {
            continue;
        };
        let kind = if metadata.file_type().is_fifo() {
            let stdio = path.ends_with("-stdout") || path.ends_with("-stderr");
            if !stdio || !mentions_container {
                continue;
            }
            "fifo"
        } else if metadata.is_file() {
            let log = path.ends_with(".log") || path.starts_with("/var/log/");
            if !log || !writes(root, pid, fd) || !mentions_container && !path.contains("/pods/") {
                continue;
            }
            "file"
        } else {
            continue;
        };
        sinks.push(OutputSink {
            kind: kind.into(),
            path,
            fd,
        });
    }
    sinks.sort_by_key(|sink| sink.fd);
    sinks
}

/// Whether fd `fd` of `pid` is open for writing (`flags:` in fdinfo, octal).
fn writes(root: &HostRoot, pid: u32, fd: i32) -> bool {
    let Ok(text) = std::fs::read_to_string(root.pid_path(pid, format!("fdinfo/{fd}"))) else {
        return false;
    };
    status::field(&text, "flags")
        .and_then(|flags| u32::from_str_radix(flags, 8).ok())
        .is_some_and(|flags| flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "cad264df46f47106f4671aa3f6ae9e73e539a7582bac636d4a4f0a214cedd15b";

    fn cmdline(args: &[&str]) -> Vec<u8> {
        let mut bytes = args.join("\0").into_bytes();
        bytes.push(0);
        bytes
    }

    #[test]
    fn podmans_conmon() {
        // As podman 4.3 started it on this machine (shortened after the log options).
        let storage = format!("/var/lib/containers/storage/overlay-containers/{ID}/userdata");
        let log = format!("k8s-file:{storage}/ctr.log");
        let bundle = storage.clone();
        let args = [
            "/usr/bin/conmon",
            "--api-version",
            "1",
            "-c",
            ID,
            "-u",
            ID,
            "-r",
            "/usr/sbin/runc",
            "-b",
            &bundle,
            "-p",
            "/run/containers/storage/overlay-containers/x/userdata/pidfile",
            "-n",
            "stdtrace-probe-5246",
            "--exit-dir",
            "/run/libpod/exits",
            "--full-attach",
            "-l",
            &log,
            "--log-level",
            "warning",
            "--exit-command",
            "/usr/bin/podman",
            "--exit-command-arg",
            "--root",
        ];
        let found = classify("conmon", &cmdline(&args)).unwrap();
        assert_eq!(found.role, "container log reader");
        assert_eq!(found.runtime, Some(Runtime::Podman));
        assert_eq!(found.container_id.as_deref(), Some(ID));
        assert_eq!(found.log_path, Some(format!("{storage}/ctr.log")));
    }

    #[test]
    fn cri_os_conmon() {
        // CRI-O 1.2x's conmon: long options, a bare log path under /var/log/pods.
        let log = "/var/log/pods/prod_web-0_8d3c5f6a-1b2e-4c7d-9a0f-3e5b7c9d1a2f/app/0.log";
        let cid = format!("--cid={ID}");
        let args = [
            "/usr/bin/conmon",
            "-b",
            "/run/containers/storage/overlay-containers/x/userdata",
            &cid,
            "--cuuid",
            "9b1f",
            "-r",
            "/usr/bin/runc",
            "--runtime-arg",
            "--root=/run/runc",
            "--socket-dir-path",
            "/var/run/crio",
            "--log-path",
            log,
            "--log-size-max",
            "-1",
            "--syslog",
            "--log-level",
            "info",
        ];
        let found = classify("conmon", &cmdline(&args)).unwrap();
        assert_eq!(found.runtime, Some(Runtime::CriO));
        assert_eq!(found.container_id.as_deref(), Some(ID));
        assert_eq!(found.log_path.as_deref(), Some(log));
    }

    #[test]
    fn containerd_shims_and_daemons() {
        let args = [
            "/usr/bin/containerd-shim-runc-v2",
            "-namespace",
            "k8s.io",
            "-id",
            ID,
            "-address",
            "/run/containerd/containerd.sock",
        ];
        let shim = classify("containerd-shim", &cmdline(&args)).unwrap();
        assert_eq!(shim.role, "container stdio relay");
        assert_eq!(shim.runtime, Some(Runtime::Containerd));
        assert_eq!(shim.container_id.as_deref(), Some(ID));
        let containerd = classify("containerd", &cmdline(&["/usr/bin/containerd"])).unwrap();
        assert_eq!(containerd.role, "container log writer");
        let dockerd = classify(
            "dockerd",
            &cmdline(&[
                "/usr/bin/dockerd",
                "-H",
                "fd://",
                "--containerd=/run/containerd/containerd.sock",
            ]),
        )
        .unwrap();
        assert_eq!(dockerd.runtime, Some(Runtime::Docker));
        assert!(dockerd.container_id.is_none());
    }

    #[test]
    fn other_processes_are_not_runtimes() {
        for (comm, args) in [
            ("cat", vec!["cat"]),
            ("sh", vec!["sh", "-c", "conmon"]),
            ("containerd-ls", vec!["/opt/containerd-ls"]),
            ("", vec![]),
        ] {
            assert_eq!(classify(comm, &cmdline(&args)), None, "{comm}");
        }
        // Garbage never panics: a conmon whose -c has no value.
        let found = classify("conmon", b"conmon\0-c").unwrap();
        assert_eq!(found.container_id, None);
        let _ = classify("conmon", b"\xff\xfe\0-l\0:\0");
    }

    #[test]
    fn this_process_sends_nothing() {
        assert!(sinks(&HostRoot::default(), std::process::id(), Some(ID)).is_empty());
    }
}
