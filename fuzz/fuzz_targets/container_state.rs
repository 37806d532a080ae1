//! A container runtime's own state read for a container's metadata: the cgroup lines of
//! `/proc/PID/cgroup` (process/cgroup.rs, and the container's v2 directory for the kernel
//! filter: enrich/container/select.rs), an OCI bundle's `config.json` with its annotations,
//! and docker's `config.v2.json` (enrich/container/state.rs). Input: the first byte picks the
//! parser, the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdtrace::{
    enrich::container::{
        select,
        state::{self, Bundle, DockerConfig},
    },
    process::cgroup,
    report::record::Container,
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, file)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let _ = cgroup::parse(file);
            let _ = select::v2_container(file);
        }
        1 => {
            if let Ok(bundle) = state::parse_json::<Bundle>(file) {
                let mut container = Container::default();
                state::apply_cri_annotations(&bundle, &mut container);
                state::apply_kubernetes_annotations(&bundle, &mut container);
            }
        }
        _ => {
            if let Ok(config) = state::parse_json::<DockerConfig>(file) {
                state::apply_docker(config, &mut Container::default());
            }
        }
    }
});
