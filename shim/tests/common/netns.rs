//! Test networks for egress tests: a network namespace for the container (joined by path, as
//! Podman and CNI do) wired by veth pairs to test hosts, each in a namespace of its own.
//!
//! Host `n` (1-based) is `198.18.n.1`, the container's end of its link `198.18.n.2`
//! (198.18.0.0/15 is reserved for benchmarking: no real host has these addresses). Tests send
//! traffic only to addresses assigned here, and every namespace is deleted on drop.

use std::process::Command;

use serde_json::Value;

use super::stderr;

/// `ip args...`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
}

/// A test host: its namespace and its address.
#[derive(Debug, Clone)]
pub struct Host {
    pub netns: String,
    pub addr: String,
}

/// The container's namespace and its test hosts.
#[derive(Debug)]
pub struct Net {
    /// Name of the container's namespace (`/run/netns/<name>`).
    pub container: String,
    pub hosts: Vec<Host>,
}

impl Net {
    /// Namespaces `ogt-<tag>-c` and `ogt-<tag>-h<n>` for `hosts` test hosts. `tag` keeps tests
    /// that run at the same time apart (and interface names within 15 bytes: keep it short).
    pub fn new(tag: &str, hosts: usize) -> Net {
        let mut net = Net {
            container: format!("ogt-{tag}-c"),
            hosts: Vec::new(),
        };
        net.add_namespace(&net.container.clone());
        for n in 1..=hosts {
            let host = Host {
                netns: format!("ogt-{tag}-h{n}"),
                addr: format!("198.18.{n}.1"),
            };
            // Recorded before it exists, so a failure half-way still cleans it up.
            net.hosts.push(host.clone());
            net.add_namespace(&host.netns);
            let (cif, hif) = (format!("og{tag}c{n}"), format!("og{tag}h{n}"));
            ip(&[
                "link",
                "add",
                &cif,
                "netns",
                &net.container,
                "type",
                "veth",
                "peer",
                "name",
                &hif,
                "netns",
                &host.netns,
            ]);
            let cside = format!("198.18.{n}.2/24");
            let hside = format!("{}/24", host.addr);
            ip(&["-n", &net.container, "addr", "add", &cside, "dev", &cif]);
            ip(&["-n", &host.netns, "addr", "add", &hside, "dev", &hif]);
            ip(&["-n", &net.container, "link", "set", &cif, "up"]);
            ip(&["-n", &host.netns, "link", "set", &hif, "up"]);
        }
        net
    }

    fn add_namespace(&self, name: &str) {
        // A namespace left over by an earlier run that was killed.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }

    /// The container's namespace, for `linux.namespaces[].path`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.container)
    }

    /// `nft args...` in the container's namespace.
    pub fn nft(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.container, "nft"])
            .args(args)
            .output()
            .unwrap()
    }

    /// `nft -j list table inet ociguard` in the container's namespace, if the table exists.
    pub fn table(&self) -> Option<Value> {
        let out = self.nft(&["-j", "list", "table", "inet", "ociguard"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// `nft list table inet ociguard` as nft prints it (the table must exist).
    pub fn listing(&self) -> String {
        let out = self.nft(&["list", "table", "inet", "ociguard"]);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let names = std::iter::once(&self.container).chain(self.hosts.iter().map(|h| &h.netns));
        for ns in names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Packets counted by the `counter` statements of an `nft -j list table` answer.
pub fn counted_packets(table: &Value) -> u64 {
    table["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("rule"))
        .flat_map(|r| r["expr"].as_array().into_iter().flatten())
        .filter_map(|e| e.get("counter"))
        .filter_map(|c| c["packets"].as_u64())
        .sum()
}
