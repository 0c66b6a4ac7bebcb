//! The loopback interface of a network namespace the container gets anew.
//!
//! runc and crun set `lo` up in a network namespace they create; libcontainer 0.7 leaves it
//! down, and a workload that talks to itself over 127.0.0.1 fails with "Network is
//! unreachable". After libcontainer has created the container (its init waits for `start`), a
//! short-lived thread joins the init's network namespace and sets `lo` up. A namespace the
//! config names by path (an engine's, a pod's) is left as the engine made it.

use std::path::Path;

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use serde::Deserialize;

#[derive(Deserialize)]
struct Config {
    linux: Option<Linux>,
}

#[derive(Deserialize)]
struct Linux {
    #[serde(default)]
    namespaces: Vec<Namespace>,
}

#[derive(Deserialize)]
struct Namespace {
    #[serde(rename = "type")]
    kind: String,
    path: Option<String>,
}

/// Does this config.json give the container a network namespace of its own, created for it?
pub(super) fn creates_netns(config: &[u8]) -> Result<bool, serde_json::Error> {
    let c: Config = serde_json::from_slice(config)?;
    Ok(c.linux.is_some_and(|l| {
        l.namespaces
            .iter()
            .any(|n| n.kind == "network" && n.path.as_deref().is_none_or(str::is_empty))
    }))
}

/// Set `lo` up in the network namespace of process `pid`.
pub(super) fn loopback_up(pid: Pid) -> Result<(), String> {
    let path = format!("/proc/{pid}/ns/net");
    let ns = std::fs::File::open(Path::new(&path)).map_err(|e| format!("open {path}: {e}"))?;
    // setns(CLONE_NEWNET) moves the calling thread only: a thread of its own, so this process
    // stays where it was.
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("join {path}: {e}"))?;
            crate::sys::loopback_up().map_err(|e| format!("set lo up in {path}: {e}"))
        })
        .join()
        .unwrap_or_else(|_| Err("the loopback thread panicked".to_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_namespace_created_for_the_container() {
        let new = br#"{"linux":{"namespaces":[{"type":"pid"},{"type":"network"}]}}"#;
        let joined = br#"{"linux":{"namespaces":[{"type":"network","path":"/run/netns/x"}]}}"#;
        let empty_path = br#"{"linux":{"namespaces":[{"type":"network","path":""}]}}"#;
        let host = br#"{"linux":{"namespaces":[{"type":"pid"}]}}"#;
        assert!(creates_netns(new).unwrap());
        assert!(!creates_netns(joined).unwrap());
        assert!(creates_netns(empty_path).unwrap());
        assert!(!creates_netns(host).unwrap());
        assert!(!creates_netns(b"{}").unwrap());
        assert!(creates_netns(b"[").is_err());
    }
}
