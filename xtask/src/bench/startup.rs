//! 4. Start-up: from launch to attached.

use std::time::Instant;

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    Paths, Scale, median,
    tracer::{Tracer, start},
};

pub(super) fn startup(paths: &Paths, scale: Scale) -> Result<Value> {
    let mut node_wide = Vec::new();
    for _ in 0..scale.startup_runs {
        let started = Instant::now();
        let running = start(paths, Tracer::Stdtrace)?;
        node_wide.push(started.elapsed().as_secs_f64() * 1000.0);
        if let Some(running) = running {
            running.stop()?;
        }
    }
    let runs = node_wide.clone();
    Ok(json!({"to_attached_ms": median(&mut node_wide), "runs_ms": runs}))
}
