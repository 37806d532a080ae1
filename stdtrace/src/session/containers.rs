//! `--container`, `--pod`, `--namespace` in a tracing run: the matching containers' cgroup v2
//! ids go into the kernel's `CGROUPS` map before anything is attached, and containers that
//! start later and match are added as they are found (every [`RESCAN_EVERY`]).

use std::{collections::HashSet, path::PathBuf, time::Duration};

use anyhow::{Result, bail};
use stdtrace_common::{MAX_CGROUP_LEVEL, TracerConfig};

use crate::{
    enrich::{
        capture::Capture,
        container::{
            Containers,
            select::{self, RunningContainer, SelectError, Selector},
        },
    },
    kernel::loader::Tracer,
};

/// How often procfs is scanned for containers that started since and match.
pub const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// The containers a run watches.
pub struct ContainerWatch {
    selectors: Vec<Selector>,
    mount: PathBuf,
    /// The cgroup levels the kernel programs were loaded to look at.
    levels: u32,
    /// Container ids whose cgroup is watched (or was refused), so that a rescan adds only
    /// new ones.
    known: HashSet<String>,
}

impl ContainerWatch {
    /// Finds the containers the selectors pick, and sets the levels the kernel looks at; an
    /// error when a selector picks none.
    pub fn find(
        selectors: &[Selector],
        containers: &mut Containers,
        config: &mut TracerConfig,
    ) -> Result<(Self, Vec<RunningContainer>)> {
        let Some(mount) = select::cgroup2_mount() else {
            bail!(SelectError::NoCgroup2);
        };
        let running = select::running(containers, Some(&mount));
        let chosen = select::select(selectors, &running, containers, Some(&mount))?;
        for found in &chosen {
            if !config.watch_cgroup_level(found.level) {
                bail!(
                    "container {} sits at cgroup level {}, deeper than the {MAX_CGROUP_LEVEL} the kernel filter looks at",
                    found.container.id,
                    found.level
                );
            }
        }
        let watch = Self {
            selectors: selectors.to_vec(),
            mount,
            levels: config.cgroup_levels,
            known: chosen
                .iter()
                .map(|found| found.container.id.clone())
                .collect(),
        };
        Ok((watch, chosen))
    }

    /// Puts the containers' cgroups in the kernel's map.
    pub fn watch(tracer: &mut Tracer, chosen: &[RunningContainer]) -> Result<()> {
        for found in chosen {
            if let Some(id) = found.cgroup_id {
                tracer.watch_cgroup(id)?;
                log::info!(
                    "tracing container {} (cgroup {} id {id})",
                    found.container.id,
                    found.cgroup_path
                );
            }
        }
        Ok(())
    }

    /// Containers that started since and match: their cgroups are watched from now on, and
    /// they are returned (their processes may already be blocked writing).
    pub fn rescan(&mut self, capture: &mut Capture, tracer: &mut Tracer) -> Vec<RunningContainer> {
        let running = select::running(capture.containers_mut(), Some(&self.mount));
        let mut added = Vec::new();
        for found in running {
            if self.known.contains(&found.container.id)
                || !select::any_matches(&self.selectors, &found.container)
            {
                continue;
            }
            self.known.insert(found.container.id.clone());
            let Some(id) = found.cgroup_id else {
                log::warn!(
                    "container {} matches but has no cgroup v2 directory: not traced",
                    found.container.id
                );
                continue;
            };
            if found.level > MAX_CGROUP_LEVEL || self.levels & (1 << found.level) == 0 {
                log::warn!(
                    "container {} matches but its cgroup {} sits at level {}, which this run's kernel filter does not look at (restart stdtrace to trace it)",
                    found.container.id,
                    found.cgroup_path,
                    found.level
                );
                continue;
            }
            match tracer.watch_cgroup(id) {
                Ok(()) => {
                    log::info!(
                        "tracing container {} too (started since; cgroup {})",
                        found.container.id,
                        found.cgroup_path
                    );
                    added.push(found);
                }
                Err(err) => log::warn!("watching container {}: {err}", found.container.id),
            }
        }
        added
    }
}
