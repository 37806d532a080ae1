//! `--metrics ADDR`: `/metrics` and `/healthz` over HTTP, served by hyper on a thread and a
//! tokio runtime of their own, so that neither a slow scraper nor encoding ever runs on the
//! event path. The instruments are `aggregate::metrics`; the exposition is prometheus-client's.
//!
//! Content negotiation: prometheus-client encodes OpenMetrics text (`encoding::text`) and,
//! since 0.26, the classic Prometheus text format 0.0.4 (`encoding::prometheus_text`). A
//! request whose `Accept` names `application/openmetrics-text` gets the first (ending in
//! `# EOF`), any other the second.

mod process;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{ACCEPT, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::{prometheus_text, text},
    metrics::info::Info,
    registry::Registry,
};
use tokio::sync::Semaphore;

use crate::aggregate::metrics::Instruments;

/// The `Content-Type` of OpenMetrics text.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections served at once; more are closed as they come. A scraper that connects and never
/// reads holds one until [`CONNECTION_LIMIT`] passes.
const MAX_CONNECTIONS: usize = 16;

/// How long one connection may last, reading and writing, whatever its peer does.
const CONNECTION_LIMIT: Duration = Duration::from_secs(30);

/// How long a request's headers may take to arrive.
const HEADER_LIMIT: Duration = Duration::from_secs(10);

/// Errors starting the metrics server.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("listening for --metrics on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the metrics thread")]
    Thread(#[source] std::io::Error),
}

/// The metrics server, running on its own thread.
pub struct MetricsServer {
    ready: Arc<AtomicBool>,
    local_addr: SocketAddr,
}

impl MetricsServer {
    /// Listens on `addr` (an error at once if it cannot) and serves `instruments`, with
    /// stdtrace's own CPU, memory and build, from a thread of its own.
    pub fn start(addr: SocketAddr, instruments: &Instruments) -> Result<Self, MetricsError> {
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let registry = Arc::new(registry(instruments));
        let ready = Arc::new(AtomicBool::new(false));
        let state = Serving {
            registry,
            ready: Arc::clone(&ready),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(MetricsError::Thread)?;
        std::thread::Builder::new()
            .name("stdtrace-metrics".to_owned())
            .spawn(move || runtime.block_on(serve(listener, state)))
            .map_err(MetricsError::Thread)?;
        Ok(Self { ready, local_addr })
    }

    /// The programs are attached: `/healthz` answers 200 from now on.
    pub fn attached(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Where it listens (the port the system chose, for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// Every metric on `/metrics`.
fn registry(instruments: &Instruments) -> Registry {
    let mut registry = Registry::default();
    instruments.register(&mut registry);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    registry.register(
        "stdtrace_build",
        "The stdtrace version and the kernel it runs on",
        Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("kernel", kernel),
        ]),
    );
    registry.register_collector(Box::new(process::OwnUsage));
    registry
}

/// What each request needs.
#[derive(Clone)]
struct Serving {
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
}

async fn serve(listener: std::net::TcpListener, state: Serving) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            log::error!("serving --metrics: {err}");
            return;
        }
    };
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                log::debug!("accepting a metrics connection: {err}");
                // Out of fds, say: try again shortly rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            log::debug!("more than {MAX_CONNECTIONS} metrics connections: closing one");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&request, &state)) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_LIMIT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIMIT, connection).await {
                Ok(Err(err)) => log::debug!("serving a metrics connection: {err}"),
                Err(_) => log::debug!("a metrics connection outlived {CONNECTION_LIMIT:?}"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }
}

fn respond<B>(request: &Request<B>, state: &Serving) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics or /healthz\n");
    }
    match request.uri().path() {
        "/metrics" => {
            let accept = request
                .headers()
                .get_all(ACCEPT)
                .iter()
                .filter_map(|value| value.to_str().ok());
            let openmetrics = accept.into_iter().any(wants_openmetrics);
            // Encoded into memory, at once: a slow reader holds its own copy, never a lock.
            let mut body = String::new();
            let (encoded, content_type) = if openmetrics {
                (
                    text::encode(&mut body, &state.registry),
                    OPENMETRICS_CONTENT_TYPE,
                )
            } else {
                (
                    prometheus_text::encode(&mut body, &state.registry),
                    prometheus_text::CONTENT_TYPE,
                )
            };
            if encoded.is_err() {
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n");
            }
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        "/healthz" if state.ready.load(Ordering::Relaxed) => plain(StatusCode::OK, "ok\n"),
        "/healthz" => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the kernel programs are not attached yet\n",
        ),
        _ => plain(StatusCode::NOT_FOUND, "GET /metrics or /healthz\n"),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Whether an `Accept` header asks for OpenMetrics text: one of its media ranges is
/// `application/openmetrics-text` with a weight above 0 (Prometheus sends it first, weighted 1).
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let weight = parts
            .filter_map(|param| param.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1.0), |(_, value)| value.trim().parse::<f64>().ok());
        media.eq_ignore_ascii_case("application/openmetrics-text")
            && weight.is_some_and(|weight| weight > 0.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_accept() {
        // What Prometheus 2.x sends.
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(wants_openmetrics("Application/OpenMetrics-Text"));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=x"));
    }

    #[test]
    fn healthz_says_503_until_attached_then_200() {
        let state = Serving {
            registry: Arc::new(registry(&Instruments::new())),
            ready: Arc::new(AtomicBool::new(false)),
        };
        let get = |path: &str, accept: &str| {
            let request = Request::builder()
                .uri(path)
                .header(ACCEPT, accept)
                .body(())
                .unwrap();
            respond(&request, &state)
        };
        assert_eq!(
            get("/healthz", "*/*").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.ready.store(true, Ordering::Relaxed);
        assert_eq!(get("/healthz", "*/*").status(), StatusCode::OK);
        assert_eq!(get("/other", "*/*").status(), StatusCode::NOT_FOUND);
        let open = get("/metrics", "application/openmetrics-text");
        assert_eq!(
            open.headers()[CONTENT_TYPE],
            OPENMETRICS_CONTENT_TYPE,
            "{open:?}"
        );
        let classic = get("/metrics", "text/plain");
        assert_eq!(
            classic.headers()[CONTENT_TYPE],
            prometheus_text::CONTENT_TYPE
        );
        let post = Request::builder()
            .method(Method::POST)
            .uri("/metrics")
            .body(())
            .unwrap();
        assert_eq!(
            respond(&post, &state).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn both_formats_carry_every_metric() {
        let instruments = Instruments::new();
        instruments.dropped_total("ringbuf_full", 2);
        let registry = registry(&instruments);
        let mut classic = String::new();
        prometheus_text::encode(&mut classic, &registry).unwrap();
        let mut open = String::new();
        text::encode(&mut open, &registry).unwrap();
        for name in [
            "stdtrace_events_dropped_total{reason=\"ringbuf_full\"} 2",
            "stdtrace_blocked_writes{state=\"stuck\"} 0",
            "stdtrace_write_blocked_seconds_count 0",
            "stdtrace_output_records_dropped_total 0",
            "stdtrace_metrics_series_folded_total 0",
            "stdtrace_build_info{version=\"",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
        ] {
            assert!(classic.contains(name), "{name} not in:\n{classic}");
            assert!(open.contains(name), "{name} not in:\n{open}");
        }
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(!classic.contains("# EOF"), "{classic}");
    }
}
