//! How a container and a runtime process's role read in text: `pod prod/web-0 container app`.

use crate::report::{
    record::{Container, Peer},
    sanitize,
};

/// ` [pod prod/web-0 container app]`, or ` [container NAME]` outside a pod; empty for a process
/// outside containers.
pub fn label(container: Option<&Container>) -> String {
    match container {
        Some(container) => format!(" [{}]", describe(container)),
        None => String::new(),
    }
}

/// `pod prod/web-0 container app`; `container stdtrace-test-1`; `container 4f7e2b6c1d9a`.
pub fn describe(container: &Container) -> String {
    let short_id = || container.id.chars().take(12).collect::<String>();
    let name = container
        .container_name
        .as_deref()
        .or(container.name.as_deref())
        .map(sanitize)
        .unwrap_or_else(short_id);
    match (&container.pod.namespace, &container.pod.name) {
        (Some(namespace), Some(pod)) => format!(
            "pod {}/{} container {name}",
            sanitize(namespace),
            sanitize(pod)
        ),
        (None, Some(pod)) => format!("pod {} container {name}", sanitize(pod)),
        _ => format!("container {name}"),
    }
}

/// `; container log reader of pod prod/web-0 container app, writing /var/lib/.../ctr.log`,
/// for a runtime process; empty for any other.
pub fn role(peer: &Peer) -> String {
    let Some(runtime) = &peer.runtime else {
        return String::new();
    };
    let mut text = format!("; {}", runtime.role);
    if let Some(serves) = &runtime.serves {
        text.push_str(&format!(" of {}", describe(serves)));
    }
    for sink in &runtime.sends_to {
        let verb = if sink.kind == "file" {
            "writing"
        } else {
            "forwarding to"
        };
        text.push_str(&format!(", {verb} {}", sanitize(&sink.path)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::record::{OutputSink, Pod, RuntimeRole};

    fn app() -> Container {
        Container {
            id: "cad264df46f47106f4671aa3f6ae9e73e539a7582bac636d4a4f0a214cedd15b".into(),
            name: Some("stdtrace-test-1".into()),
            pod: Pod {
                name: Some("web-0".into()),
                namespace: Some("prod".into()),
                uid: None,
            },
            container_name: Some("app".into()),
            ..Container::default()
        }
    }

    #[test]
    fn pods_first_then_names_then_ids() {
        assert_eq!(label(Some(&app())), " [pod prod/web-0 container app]");
        let mut bare = app();
        bare.pod = Pod::default();
        bare.container_name = None;
        assert_eq!(describe(&bare), "container stdtrace-test-1");
        bare.name = None;
        assert_eq!(describe(&bare), "container cad264df46f4");
        assert_eq!(label(None), "");
    }

    #[test]
    fn a_runtime_reader_says_what_it_serves_and_where_it_writes() {
        let peer = Peer {
            pid: 11598,
            comm: "conmon".into(),
            fds: vec![8],
            activity: None,
            container: None,
            runtime: Some(RuntimeRole {
                role: "container log reader".into(),
                serves: Some(app()),
                sends_to: vec![OutputSink {
                    kind: "file".into(),
                    path: "/ctr.log".into(),
                    fd: 6,
                }],
            }),
            blocked_write: None,
        };
        assert_eq!(
            role(&peer),
            "; container log reader of pod prod/web-0 container app, writing /ctr.log"
        );
    }
}
