//! `--metrics`' content negotiation (report/metrics.rs `wants_openmetrics`: a scraper's
//! `Accept` header) and the `--metrics-labels` list (aggregate/metrics.rs). Input: the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdtrace::{aggregate::metrics::LabelChoice, report::metrics::wants_openmetrics};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = wants_openmetrics(&text);
    let _ = text.parse::<LabelChoice>();
});
