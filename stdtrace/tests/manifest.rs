//! `deploy/kubernetes/stdtrace.yaml` against Kubernetes 1.37's own schemas, offline, with
//! `kubernetes-validate` (PyPI; `cargo xtask setup` installs it in a venv under
//! `~/.local/share/stdtrace/kubernetes-validate`), strictly: an unknown field is an error. A
//! manifest spoiled on purpose must fail, so the check is known to check.

#[path = "support/can_run.rs"]
mod can_run;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use can_run::Need;

const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/kubernetes/stdtrace.yaml"
);
/// A current Kubernetes release (the schemas `kubernetes-validate` 1.37.0 carries).
const KUBERNETES: &str = "1.37.0";

fn validator() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".local/share/stdtrace/kubernetes-validate/bin/kubernetes-validate")
}

fn validate(validator: &Path, manifest: &Path) -> Output {
    Command::new(validator)
        .args(["--strict", "--kubernetes-version", KUBERNETES])
        .arg(manifest)
        .output()
        .expect("running kubernetes-validate")
}

#[test]
fn the_daemonset_manifest_is_valid_kubernetes() {
    let validator = validator();
    if !can_run::require(Need::Program(&validator)) {
        return;
    }
    let output = validate(&validator, Path::new(MANIFEST));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    for resource in [
        "namespace/stdtrace",
        "serviceaccount/stdtrace",
        "daemonset/stdtrace",
    ] {
        assert!(
            said.contains(&format!(
                "passed for resource {resource} against version 1.37"
            )),
            "{resource}: {said}"
        );
    }
    assert!(!said.contains("ERROR") && !said.contains("WARN"), "{said}");

    // The same manifest with one field of the wrong type, and one that does not exist.
    let text = std::fs::read_to_string(MANIFEST).expect("reading the manifest");
    let dir = std::env::temp_dir().join(format!("stdtrace-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    for (from, to, complaint) in [
        (
            "hostPID: true",
            "hostPID: \"yes\"",
            "spec.template.spec.hostPID: 'yes' is not of type 'boolean'",
        ),
        (
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: true\n            readOnlyHostFilesystem: true",
            "readOnlyHostFilesystem",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let spoiled = dir.join("spoiled.yaml");
        std::fs::write(&spoiled, text.replacen(from, to, 1)).expect("writing it");
        let output = validate(&validator, &spoiled);
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{to:?} passed: {said}");
        assert!(
            said.contains("did not validate for resource daemonset/stdtrace")
                && said.contains(complaint),
            "{to:?}: {said}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
