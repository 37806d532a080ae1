//! stdtrace's own CPU and memory, read at each scrape under the names Prometheus's own
//! clients give them (`process_cpu_seconds_total`, `process_resident_memory_bytes`):
//! prometheus-client has no process collector.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

use crate::process::own_usage;

#[derive(Debug)]
pub struct OwnUsage;

impl Collector for OwnUsage {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(cpu) = own_usage::cpu_time() {
            let counter = ConstCounter::new(cpu.as_secs_f64());
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time stdtrace has used, in seconds",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        if let Some(resident) = own_usage::resident_bytes() {
            let gauge = ConstGauge::new(i64::try_from(resident).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "stdtrace's resident memory, in bytes",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}
