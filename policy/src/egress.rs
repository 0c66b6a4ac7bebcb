//! Egress allowlists (`[egress]` of a policy): validation, the nftables ruleset installed in the
//! container's network namespace, and the `config.json` edits that go with it.
//!
//! The ruleset is one table, `inet ociguard`, with one base chain on the `output` hook:
//!
//! ```text
//! table inet ociguard {
//!   chain output {
//!     type filter hook output priority filter; policy drop;
//!     oifname "lo" accept
//!     ct state established,related accept
//!     icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, mld-listener-report, mld2-listener-report } accept
//!     ct state new counter log prefix "ociguard-new " group <nflog_group>       # only to observe
//!     ip daddr { <resolvers> } meta l4proto { tcp, udp } th dport 53 accept    # only with host entries
//!     ip daddr { <allowed> } [meta l4proto ...] [th dport { ... }] accept      # one per (family, protocol, ports)
//!     counter log prefix "ociguard-deny " group <nflog_group>
//!     meta l4proto tcp reject with tcp reset                                   # on_deny = "reject"
//!     reject with icmpx admin-prohibited
//!   }
//! }
//! ```
//!
//! Allow entries are grouped by (family, protocol, ports) and their networks merged, so a policy
//! with thousands of addresses becomes a handful of rules with anonymous interval sets (one
//! lookup per new connection, not a linear walk). Under `audit` the chain's policy is `accept`
//! and nothing is rejected: denials are only counted and logged.
//!
//! To observe (a `learn` policy, or one with `[profile] on_anomaly`), the first packet of every
//! outbound connection is also logged, with [`OBSERVE_PREFIX`]: ociguardd records the
//! destinations into the container's profile or compares them with it. A policy that does not
//! restrict egress then gets an observe-only ruleset ([`observe_only`]): chain policy `accept`,
//! no allowlist, no denial log.
//!
//! The ruleset is rendered to nft's JSON with the `nftables` crate and applied by
//! `ociguard-hook egress` in one `nft -j -f -` transaction (all or nothing). Its canonical bytes
//! give the ruleset digest carried in the decision, the annotations and the identity record.
//!
//! Pure: name resolution and every file or namespace operation belong to the callers.
//!
//! Here: the `config.json` edits ([`apply`], [`remove`]) and what they need. The load-time
//! checks are in `egress/validate.rs`, the ruleset and its renderings in `egress/program.rs`,
//! the netlink batch that installs it in [`netlink`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::capabilities;
use crate::change::Change;
use crate::config::Installer;
use crate::model::{EgressMode, EgressRules};
use crate::oci_hooks::{self, EngineLog, HookEditError};

pub mod netlink;
mod program;
mod validate;

pub use program::{nft_json, observe_only, program, render, ruleset, Accept, Program, Ruleset};
pub use validate::{check_host, parse_cidr, parse_port, validate};

/// The table ociguard owns in a container's network namespace (family `inet`).
pub const TABLE: &str = "ociguard";
/// Its only chain, on the `output` hook.
pub const CHAIN: &str = "output";
/// Prefix of the log statement on denials (NFLOG group from the node config).
pub const LOG_PREFIX: &str = "ociguard-deny ";
/// Prefix of the log statement on every new connection, when observing.
pub const OBSERVE_PREFIX: &str = "ociguard-new ";
/// `argv[1]` of the egress hook entry (`ociguard-hook egress ...`).
pub const HOOK_EVENT: &str = "egress";
/// Annotation carrying the ruleset digest (the identity hook records it as profile `egress`).
pub const DIGEST_ANNOTATION: &str = crate::annotations::EGRESS_DIGEST;
/// Capabilities that would let the container change or bypass its own rules.
pub const NET_CAPS: [&str; 2] = ["CAP_NET_ADMIN", "CAP_NET_RAW"];
/// Upper bound on `allow` entries per policy (nft handles far more; this bounds create time).
pub const MAX_ENTRIES: usize = 100_000;
pub fn mode_str(mode: EgressMode) -> &'static str {
    match mode {
        EgressMode::Unrestricted => "unrestricted",
        EgressMode::DenyAll => "deny-all",
        EgressMode::Allowlist => "allowlist",
    }
}

/// The host names a policy's entries need resolved, in order, without duplicates.
pub fn hosts(rules: &EgressRules) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for e in &rules.allow {
        if let Some(h) = &e.get_ref().host {
            if !out.contains(&h.get_ref().as_str()) {
                out.push(h.get_ref());
            }
        }
    }
    out
}

/// What the caller found out about the host names (at create time, on the host).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Name → its addresses.
    pub resolved: BTreeMap<String, Vec<IpAddr>>,
    /// Name → why it did not resolve.
    pub unresolved: BTreeMap<String, String>,
    /// DNS servers the container may query (port 53, TCP and UDP), when the policy names hosts.
    pub resolvers: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EgressError {
    #[error("egress allow host {name:?} did not resolve ({reason}) and the policy says on_unresolvable = \"fail\"")]
    Unresolvable { name: String, reason: String },
    #[error("the container uses the host's network namespace, and egress is restricted ({mode}) by this policy: its rules would have to go into the node's own namespace. Run it with its own network namespace, or set egress.allow_host_network = true to let it run unrestricted")]
    HostNetwork { mode: &'static str },
    #[error("config.json field {field}: expected {expected}")]
    Shape {
        field: &'static str,
        expected: &'static str,
    },
    #[error(transparent)]
    Hooks(#[from] HookEditError),
}

/// The container's network namespace, as config.json describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// A new one, created by the runtime.
    New,
    /// An existing one joined by path (Podman, CNI, a pod sandbox's).
    Path(String),
    /// No `network` entry: the host's.
    Host,
}

pub fn network_namespace(spec: &Value) -> Netns {
    let entry = spec
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter()
                .find(|n| n.get("type").and_then(Value::as_str) == Some("network"))
        });
    match entry {
        None => Netns::Host,
        Some(n) => match n.get("path").and_then(Value::as_str) {
            Some(p) if !p.is_empty() => Netns::Path(p.to_owned()),
            _ => Netns::New,
        },
    }
}

/// Where the hook and its inputs are (all absolute paths from the node config).
#[derive(Debug, Clone, Copy)]
pub struct HookTarget<'a> {
    pub hook_path: &'a Path,
    /// The rendered ruleset file `ociguard-hook egress` reads (content-addressed).
    pub ruleset_path: &'a Path,
    pub installer: Installer,
    /// `installer = "nft"` only.
    pub nft: &'a Path,
    pub engine_log: Option<EngineLog<'a>>,
}

pub fn hook_entry(target: &HookTarget<'_>, digest: &str, enforce: bool) -> Value {
    let mut args = vec![
        "--ruleset".to_owned(),
        target.ruleset_path.display().to_string(),
        "--digest".to_owned(),
        digest.to_owned(),
        "--installer".to_owned(),
        target.installer.as_str().to_owned(),
    ];
    if target.installer == Installer::Nft {
        args.extend(["--nft".to_owned(), target.nft.display().to_string()]);
    }
    args.extend([
        "--mode".to_owned(),
        if enforce { "enforce" } else { "audit" }.to_owned(),
    ]);
    oci_hooks::entry(target.hook_path, HOOK_EVENT, &args, target.engine_log)
}

fn object<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<&'a mut Map<String, Value>, EgressError> {
    let v = parent
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().ok_or(EgressError::Shape {
        field,
        expected: "an object",
    })
}

/// Remove ociguard's egress hook and digest annotation (an unrestricted policy on a retried
/// create, or a policy that changed). Returns whether anything was removed.
pub fn remove(spec: &mut Value) -> bool {
    let changed = oci_hooks::remove(spec, "createRuntime", HOOK_EVENT);
    crate::annotations::set(spec, DIGEST_ANNOTATION, None) || changed
}

/// Apply a restricting `[egress]` to `spec`: the network namespace (refuse host networking or,
/// under `deny-all`, give the container an empty one), no `CAP_NET_ADMIN`/`CAP_NET_RAW`, the
/// createRuntime hook that installs `ruleset`, and the digest annotation. Idempotent.
///
/// Under audit (`enforce = false`) nothing that changes the container's behaviour is done: no
/// namespace, no capability change; the hook installs the logging-only ruleset. Returns the
/// changes (only [`Change::EgressNotEnforced`] for host networking the policy permits, or
/// under audit).
pub fn apply(
    spec: &mut Value,
    rules: &EgressRules,
    enforce: bool,
    ruleset: &Ruleset,
    target: &HookTarget<'_>,
) -> Result<Vec<Change>, EgressError> {
    oci_hooks::require_absolute(&[
        ("hook_path", target.hook_path),
        ("ruleset path", target.ruleset_path),
    ])?;
    if target.installer == Installer::Nft {
        oci_hooks::require_absolute(&[("nft", target.nft)])?;
    }
    let mut changes = Vec::new();
    let mode = mode_str(rules.mode);
    let host = network_namespace(spec) == Netns::Host;
    if host && rules.mode != EgressMode::DenyAll {
        let reason = if rules.allow_host_network {
            "host network namespace, permitted by egress.allow_host_network".to_owned()
        } else if enforce {
            return Err(EgressError::HostNetwork { mode });
        } else {
            format!(
                "{}; audit mode: started anyway",
                EgressError::HostNetwork { mode }
            )
        };
        remove(spec);
        changes.push(Change::EgressNotEnforced { reason });
        return Ok(changes);
    }
    let root = spec.as_object_mut().ok_or(EgressError::Shape {
        field: "(document)",
        expected: "an object",
    })?;
    if host {
        // deny-all: a new, empty namespace (loopback only) instead of the host's.
        if enforce {
            let linux = object(root, "linux", "linux")?;
            let ns = linux
                .entry("namespaces")
                .or_insert_with(|| Value::Array(Vec::new()));
            if ns.is_null() {
                *ns = Value::Array(Vec::new());
            }
            ns.as_array_mut()
                .ok_or(EgressError::Shape {
                    field: "linux.namespaces",
                    expected: "an array",
                })?
                .push(json!({"type": "network"}));
        }
        changes.push(Change::NetworkNamespaceInjected { applied: enforce });
    }
    // The container must not be able to change or bypass its rules.
    let net_caps: Vec<String> = NET_CAPS.iter().map(|c| (*c).to_owned()).collect();
    if let Some(process) = root.get_mut("process").and_then(Value::as_object_mut) {
        let removed = match process.get_mut("capabilities") {
            Some(Value::Object(caps)) if enforce => capabilities::drop_from(caps, &net_caps, false),
            Some(Value::Object(caps)) => {
                let mut copy = caps.clone();
                capabilities::drop_from(&mut copy, &net_caps, false)
            }
            _ => Vec::new(),
        };
        if !removed.is_empty() {
            changes.push(Change::CapabilitiesDropped {
                capabilities: removed,
                applied: enforce,
            });
        }
    }
    let list = oci_hooks::list_mut(root, "createRuntime")?;
    oci_hooks::place(
        list,
        HOOK_EVENT,
        hook_entry(target, &ruleset.digest, enforce),
    );
    object(root, "annotations", "annotations")?.insert(
        DIGEST_ANNOTATION.to_owned(),
        Value::String(ruleset.digest.clone()),
    );
    changes.push(Change::Egress {
        mode: rules.mode,
        on_deny: rules.on_deny,
        ruleset_digest: ruleset.digest.clone(),
        rules: ruleset.rules,
        networks: ruleset.networks,
        hook: target.hook_path.display().to_string(),
        applied: enforce,
    });
    Ok(changes)
}

/// The resolution facts as they go into the decision (addresses as strings).
pub fn resolution_change(res: &Resolution) -> Option<Change> {
    if res.resolved.is_empty() && res.unresolved.is_empty() {
        return None;
    }
    Some(Change::EgressHostsResolved {
        resolved: res
            .resolved
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(ToString::to_string).collect()))
            .collect(),
        unresolved: res.unresolved.clone(),
        resolvers: res.resolvers.iter().map(ToString::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_policy;
    use crate::model::Policy;
    use crate::oci_hooks::HOOK_ENV;

    pub(super) fn policy(text: &str) -> Policy {
        parse_policy(Path::new("p.toml"), text).unwrap().policy
    }

    pub(super) const ALLOW: &str = r#"name = "default"
[egress]
mode = "allowlist"
[[egress.allow]]
cidr = "198.18.1.0/24"
protocol = "tcp"
ports = [8080, "9000-9010"]
[[egress.allow]]
cidr = "198.18.3.4"
protocol = "tcp"
ports = [8080]
[[egress.allow]]
host = "api.example.test"
ports = [443]
[[egress.allow]]
cidr = "2001:db8::/32"
"#;

    pub(super) fn resolution() -> Resolution {
        Resolution {
            resolved: [(
                "api.example.test".to_owned(),
                vec!["198.18.5.5".parse().unwrap(), "198.18.5.6".parse().unwrap()],
            )]
            .into_iter()
            .collect(),
            unresolved: BTreeMap::new(),
            resolvers: vec!["198.18.0.53".parse().unwrap()],
        }
    }

    fn target() -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        (
            "/usr/local/bin/ociguard-hook".into(),
            "/run/ociguard/egress/abc.json".into(),
            "/usr/sbin/nft".into(),
        )
    }

    #[test]
    fn spec_edits() {
        let p = policy(ALLOW);
        let r = render(&p.egress, true, &resolution(), 100).unwrap();
        let (h, rs, nft) = target();
        let t = HookTarget {
            hook_path: &h,
            ruleset_path: &rs,
            installer: Installer::Netlink,
            nft: &nft,
            engine_log: None,
        };
        let mut spec = json!({
            "process": {"capabilities": {"bounding": ["CAP_NET_RAW", "CAP_CHOWN", "CAP_NET_ADMIN"], "effective": ["CAP_NET_RAW"]}},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/x"}]},
            "hooks": {"createRuntime": [{"path": "/usr/bin/other"}]}
        });
        let changes = apply(&mut spec, &p.egress, true, &r, &t).unwrap();
        assert_eq!(
            spec["process"]["capabilities"]["bounding"],
            json!(["CAP_CHOWN"])
        );
        assert_eq!(spec["process"]["capabilities"]["effective"], json!([]));
        let cr = spec["hooks"]["createRuntime"].as_array().unwrap();
        assert_eq!(cr.len(), 2);
        assert_eq!(cr[0]["path"], "/usr/bin/other");
        assert_eq!(cr[1]["args"][1], "egress");
        assert_eq!(cr[1]["args"][5], json!(r.digest));
        assert_eq!(cr[1]["env"], json!([HOOK_ENV]));
        assert_eq!(spec["annotations"][DIGEST_ANNOTATION], json!(r.digest));
        assert!(changes.iter().any(|c| matches!(c, Change::CapabilitiesDropped { capabilities, applied: true } if capabilities.len() == 2)));
        assert!(changes.iter().any(|c| matches!(c, Change::Egress { .. })));
        let before = spec.clone();
        apply(&mut spec, &p.egress, true, &r, &t).unwrap();
        assert_eq!(spec, before, "a retried create changes nothing");
        assert!(remove(&mut spec));
        assert_eq!(spec["hooks"]["createRuntime"].as_array().unwrap().len(), 1);
        assert!(spec["annotations"].get(DIGEST_ANNOTATION).is_none());
    }

    #[test]
    fn host_network() {
        let (h, rs, nft) = target();
        let t = HookTarget {
            hook_path: &h,
            ruleset_path: &rs,
            installer: Installer::Netlink,
            nft: &nft,
            engine_log: None,
        };
        let allow = policy(ALLOW);
        let r = render(&allow.egress, true, &resolution(), 1).unwrap();
        let host = json!({"process": {}, "linux": {"namespaces": [{"type": "pid"}]}});
        let mut spec = host.clone();
        let err = apply(&mut spec, &allow.egress, true, &r, &t).unwrap_err();
        assert!(matches!(err, EgressError::HostNetwork { .. }));
        assert!(
            err.to_string().contains("host's network namespace"),
            "{err}"
        );
        // audit: recorded, unchanged behaviour
        let mut spec = host.clone();
        let ch = apply(&mut spec, &allow.egress, false, &r, &t).unwrap();
        assert!(matches!(&ch[0], Change::EgressNotEnforced { .. }));
        assert!(spec.pointer("/hooks/createRuntime").is_none());
        // permitted by the policy
        let permit = policy(&ALLOW.replace(
            "mode = \"allowlist\"",
            "mode = \"allowlist\"\nallow_host_network = true",
        ));
        let mut spec = host.clone();
        let ch = apply(&mut spec, &permit.egress, true, &r, &t).unwrap();
        assert!(matches!(&ch[0], Change::EgressNotEnforced { .. }));
        // deny-all gets an empty namespace of its own
        let deny = policy("name = \"default\"\n[egress]\nmode = \"deny-all\"\n");
        let r = render(&deny.egress, true, &Resolution::default(), 1).unwrap();
        let mut spec = host.clone();
        apply(&mut spec, &deny.egress, true, &r, &t).unwrap();
        assert_eq!(network_namespace(&spec), Netns::New);
        let once = spec.clone();
        apply(&mut spec, &deny.egress, true, &r, &t).unwrap();
        assert_eq!(spec, once);
        assert_eq!(
            network_namespace(
                &json!({"linux": {"namespaces": [{"type": "network", "path": "/run/netns/a"}]}})
            ),
            Netns::Path("/run/netns/a".into())
        );
    }
}
