//! Egress at `create`: resolve a policy's host names, render its nftables ruleset, edit the
//! config (namespace, capabilities, the `ociguard-hook egress` createRuntime hook) and, on
//! commit, store the ruleset where the hook reads it.
//!
//! The ruleset and the spec edits are pure ([`ociguard_policy::egress`]); this module owns the
//! host facts: name resolution (an admin-pinned hosts file, then the system resolver, bounded
//! by a timeout), the resolvers a container may query, whether the hook is installed, and the
//! ruleset file. The file is content-addressed (`<state_dir>/egress/<sha256>.json`) and the
//! hook checks the digest it was given, so a ruleset cannot be swapped under a container.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use ociguard_policy::change::Change;
use ociguard_policy::digest::sha256;
use ociguard_policy::egress::{
    self as rules, EgressError as RenderError, HookTarget, Resolution, Ruleset,
};
use ociguard_policy::model::EgressMode;
use ociguard_policy::oci_hooks::EngineLog;
use ociguard_policy::{LoadedPolicy, Mode, Rewritten};
use serde_json::Value;

use crate::argv::LogFormat;
use crate::Context;

/// Subdirectory of `state_dir` with the rendered rulesets.
pub const RULESET_DIR: &str = "egress";
/// hosts and resolv.conf files are read up to this size.
const MAX_CONF: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress is restricted by policy {policy:?}: {source}")]
    Render { policy: String, source: RenderError },
    #[error("egress is restricted by policy {policy:?}, but the hook that installs the rules, {path}, {reason} (install ociguard-hook or set hook_path in the ociguard config)")]
    HookUnusable {
        policy: String,
        path: PathBuf,
        reason: String,
    },
    #[error("egress ruleset: {0}")]
    Store(#[from] crate::atomic::StoreError),
}

/// What commit has to do: store the ruleset the hook will install.
#[derive(Debug, Clone)]
pub struct EgressPlan {
    pub ruleset: Ruleset,
    pub path: PathBuf,
}

pub fn ruleset_path(state_dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    state_dir.join(RULESET_DIR).join(format!("{hex}.json"))
}

/// Apply the chosen policy's `[egress]` to `rewritten`. No side effects beyond reading the
/// hosts/resolver files and name resolution.
pub fn prepare(
    ctx: &Context<'_>,
    policy: &LoadedPolicy,
    rewritten: &mut Rewritten,
) -> Result<Option<EgressPlan>, EgressError> {
    let egress = &policy.policy.egress;
    // A learning policy, or one comparing with the profile, logs each new connection.
    let observe = policy.policy.mode == Mode::Learn || !policy.policy.profile.is_off();
    let restricts = egress.mode != EgressMode::Unrestricted;
    if !restricts && !observe {
        // A retried create after the policy changed: no rules of ours may stay behind.
        rules::remove(&mut rewritten.document);
        return Ok(None);
    }
    let name = policy.name().to_owned();
    // Observing alone changes nothing the container can tell: it is never a reason to refuse
    // it, and the ruleset it installs refuses nothing.
    let enforce = policy.policy.mode.enforces() && restricts;
    let config = ctx.config;
    if let Some(reason) = crate::identity::hook_unusable(&config.hook_path) {
        let err = EgressError::HookUnusable {
            policy: name,
            path: config.hook_path.clone(),
            reason,
        };
        if enforce {
            return Err(err);
        }
        rules::remove(&mut rewritten.document);
        rewritten.decision.changes.push(Change::EgressNotEnforced {
            reason: err.to_string(),
        });
        return Ok(None);
    }
    let hosts = rules::hosts(egress);
    let resolution = if hosts.is_empty() {
        Resolution::default()
    } else {
        let (resolved, unresolved) = resolve(
            &hosts,
            &config.egress.hosts_file,
            Duration::from_millis(config.egress.resolve_timeout_ms),
        );
        Resolution {
            resolved,
            unresolved,
            resolvers: resolvers(&rewritten.document, &config.egress.resolv_conf),
        }
    };
    let render_err = |source| EgressError::Render {
        policy: name.clone(),
        source,
    };
    let group = config.egress.nflog_group;
    let ruleset = if restricts {
        let mut program =
            rules::program(egress, enforce, &resolution, group).map_err(render_err)?;
        program.observe = observe;
        rules::ruleset(program)
    } else {
        rules::ruleset(rules::observe_only(group))
    };
    let path = ruleset_path(&config.state_dir, &ruleset.digest);
    let target = HookTarget {
        hook_path: &config.hook_path,
        ruleset_path: &path,
        installer: config.egress.installer,
        nft: &config.egress.nft,
        engine_log: ctx.logger.path.as_deref().map(|path| EngineLog {
            path,
            json: ctx.logger.format == LogFormat::Json,
        }),
    };
    let changes = rules::apply(&mut rewritten.document, egress, enforce, &ruleset, &target)
        .map_err(render_err)?;
    let installs = changes.iter().any(|c| matches!(c, Change::Egress { .. }));
    rewritten
        .decision
        .changes
        .extend(rules::resolution_change(&resolution));
    rewritten.decision.changes.extend(changes);
    Ok(installs.then_some(EgressPlan { ruleset, path }))
}

/// Store the ruleset for the hook (before config.json names it). Content-addressed: an
/// existing file with the right digest is kept.
pub fn commit(plan: Option<&EgressPlan>) -> Result<(), EgressError> {
    let Some(plan) = plan else { return Ok(()) };
    if let Ok(bytes) = std::fs::read(&plan.path) {
        if sha256(&bytes) == plan.ruleset.digest {
            return Ok(());
        }
    }
    let dir = plan.path.parent().unwrap_or(Path::new("/"));
    // No fsync: a file torn by a crash fails the digest check above (rewritten) and the hook's
    // (refused), never installs.
    crate::atomic::store_cache(dir, &plan.path, plan.ruleset.file.as_bytes())?;
    Ok(())
}

fn read_bounded(path: &Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_CONF)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// `/etc/hosts`-format lines: address, then names (comments after `#`).
pub fn parse_hosts(text: &str, name: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(Ok(addr)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if fields.any(|n| {
            n.trim_end_matches('.')
                .eq_ignore_ascii_case(name.trim_end_matches('.'))
        }) {
            out.push(addr);
        }
    }
    out
}

/// `nameserver` addresses of a resolv.conf.
pub fn parse_nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("nameserver"))
                .then(|| f.next())
                .flatten()
                .and_then(|a| a.split('%').next())
                .and_then(|a| a.parse().ok())
        })
        .collect()
}

/// The resolvers the container will ask: its own `/etc/resolv.conf` (the bind-mount source
/// the engine wrote) and the node's.
fn resolvers(spec: &Value, node_resolv_conf: &Path) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let own = spec
        .get("mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|m| m.get("destination").and_then(Value::as_str) == Some("/etc/resolv.conf"))
        .filter_map(|m| m.get("source").and_then(Value::as_str))
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    for path in own.chain(std::iter::once(node_resolv_conf.to_owned())) {
        if let Some(text) = read_bounded(&path) {
            for a in parse_nameservers(&text) {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}

type Resolved = (BTreeMap<String, Vec<IpAddr>>, BTreeMap<String, String>);

/// Resolve `names`: the pinned hosts file first, then the system resolver (getaddrinfo, which
/// follows nsswitch.conf), all within `timeout`. A name still pending at the deadline is
/// unresolved ("timed out"); the lookup thread is abandoned (the process execs the runtime
/// right after, which ends it).
fn resolve(names: &[&str], hosts_file: &Path, timeout: Duration) -> Resolved {
    let mut resolved = BTreeMap::new();
    let mut unresolved = BTreeMap::new();
    let pinned = read_bounded(hosts_file).unwrap_or_default();
    let mut pending = Vec::new();
    for name in names {
        let addrs = parse_hosts(&pinned, name);
        if addrs.is_empty() {
            pending.push((*name).to_owned());
        } else {
            resolved.insert((*name).to_owned(), addrs);
        }
    }
    if pending.is_empty() {
        return (resolved, unresolved);
    }
    let (tx, rx) = mpsc::channel();
    let names = pending.clone();
    std::thread::spawn(move || {
        for name in names {
            let r = (name.as_str(), 0u16)
                .to_socket_addrs()
                .map(|it| {
                    let mut v: Vec<IpAddr> = it.map(|sa| sa.ip()).collect();
                    v.sort();
                    v.dedup();
                    v
                })
                .map_err(|e| e.to_string());
            if tx.send((name, r)).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + timeout;
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((name, result)) => {
                pending.retain(|n| *n != name);
                match result {
                    Ok(addrs) if !addrs.is_empty() => {
                        resolved.insert(name, addrs);
                    }
                    Ok(_) => {
                        unresolved.insert(name, "no addresses".to_owned());
                    }
                    Err(e) => {
                        unresolved.insert(name, e);
                    }
                }
            }
            Err(_) => break,
        }
    }
    for name in pending {
        unresolved.insert(name, format!("timed out after {} ms", timeout.as_millis()));
    }
    (resolved, unresolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_nameservers() {
        let hosts = "# pinned\n198.18.1.1 api.test api\n198.18.1.2\tAPI.test. # second\n::1 localhost\nbogus line\n";
        assert_eq!(
            parse_hosts(hosts, "api.test"),
            vec![
                "198.18.1.1".parse::<IpAddr>().unwrap(),
                "198.18.1.2".parse().unwrap()
            ]
        );
        assert!(parse_hosts(hosts, "other.test").is_empty());
        let rc = "search x\nnameserver 198.18.0.53\nnameserver fe80::1%eth0\nnameserver junk\n";
        assert_eq!(
            parse_nameservers(rc),
            vec![
                "198.18.0.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn resolution_uses_the_pinned_file_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "198.18.7.7 pinned.test\n").unwrap();
        let (ok, bad) = resolve(
            &["pinned.test", "localhost", "no-such-host.invalid"],
            &hosts,
            Duration::from_secs(5),
        );
        assert_eq!(
            ok["pinned.test"],
            vec!["198.18.7.7".parse::<IpAddr>().unwrap()]
        );
        assert!(ok["localhost"].iter().all(IpAddr::is_loopback), "{ok:?}");
        assert!(bad.contains_key("no-such-host.invalid"), "{bad:?}");
        let (_, bad) = resolve(&["no-such-host.invalid"], &hosts, Duration::ZERO);
        assert!(
            bad["no-such-host.invalid"].contains("timed out")
                || !bad["no-such-host.invalid"].is_empty()
        );
    }

    #[test]
    fn container_resolv_conf_first() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("resolv.conf");
        std::fs::write(&own, "nameserver 198.18.0.1\n").unwrap();
        let node = dir.path().join("node.conf");
        std::fs::write(&node, "nameserver 198.18.0.2\nnameserver 198.18.0.1\n").unwrap();
        let spec = serde_json::json!({"mounts": [{"destination": "/etc/resolv.conf", "source": own, "type": "bind"}]});
        assert_eq!(
            resolvers(&spec, &node),
            vec![
                "198.18.0.1".parse::<IpAddr>().unwrap(),
                "198.18.0.2".parse().unwrap()
            ]
        );
        assert_eq!(
            resolvers(&serde_json::json!({}), &dir.path().join("missing")),
            Vec::<IpAddr>::new()
        );
    }
}
