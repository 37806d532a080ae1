//! A real Prometheus (Debian's `prometheus` package) started by a test, and plain HTTP GETs of
//! stdtrace's `/metrics` and of Prometheus's query API.

#![allow(
    dead_code,
    reason = "each test binary uses its own part of the support code"
)]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("finding a free port")
        .port()
}

/// An HTTP response: status, headers (as received), body.
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// `GET path` on 127.0.0.1:`port`, with `Accept: accept` if given; None if nothing listens.
pub fn get(port: u16, path: &str, accept: Option<&str>) -> Option<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let accept = accept
        .map(|accept| format!("Accept: {accept}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{accept}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Response {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
    })
}

/// Waits until `port` answers `GET path` with 200, and returns the body.
pub fn wait_for_ok(port: u16, path: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(response) = get(port, path, None)
            && response.status == 200
        {
            return response.body;
        }
        assert!(
            Instant::now() < deadline,
            "127.0.0.1:{port}{path} did not answer 200 within {limit:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// A Prometheus server of the test's own, scraping one target every second; stopped (by its
/// pid) when dropped.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts it on a free loopback port with a generated config and a temporary storage
    /// directory, scraping `127.0.0.1:target` every second, and waits until it is ready.
    pub fn start(target: u16) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("stdtrace-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).expect("creating Prometheus's directory");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: stdtrace\n    scrape_interval: 1s\n    \
                 scrape_timeout: 1s\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .expect("writing Prometheus's config");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("prometheus.log")).expect("Prometheus's log"),
            ))
            .spawn()
            .expect("starting prometheus");
        let prometheus = Self { child, port, dir };
        wait_for_ok(port, "/-/ready", Duration::from_secs(30));
        prometheus
    }

    /// The values of an instant query's result vector, with their labels.
    pub fn query(&self, query: &str) -> Vec<(Value, f64)> {
        let path = format!("/api/v1/query?query={}", encode(query));
        let response = get(self.port, &path, None).expect("querying Prometheus");
        assert_eq!(response.status, 200, "{}", response.body);
        let answer: Value = serde_json::from_str(&response.body).expect("Prometheus's JSON");
        assert_eq!(answer["status"], "success", "{answer}");
        answer["data"]["result"]
            .as_array()
            .expect("a vector")
            .iter()
            .map(|sample| {
                let value = sample["value"][1]
                    .as_str()
                    .and_then(|value| value.parse().ok())
                    .expect("a sample value");
                (sample["metric"].clone(), value)
            })
            .collect()
    }

    /// What Prometheus says of its scrape targets.
    pub fn targets(&self) -> Value {
        let response = get(self.port, "/api/v1/targets", None).expect("Prometheus's targets");
        serde_json::from_str(&response.body).expect("Prometheus's JSON")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; it did not stop on SIGTERM.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
