//! `ociguardctl explain BUNDLE`: the decision `create` would make, without touching anything.
//!
//! It runs the shim's own planning step (`ociguard_shim::create::plan`), so what it prints is
//! what `create` applies: same facts, same policy, same bytes.

use ociguard_policy::config::Runtime;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use ociguard_policy::RuntimeConfig;
use ociguard_shim::logging::Logger;
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The bundle directory (containing config.json).
    bundle: PathBuf,
    /// Container id to assume (only used in messages).
    #[arg(long, default_value = "explain")]
    id: String,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let config_path = RuntimeConfig::path_from_env();
    let config = RuntimeConfig::load(&config_path)?;
    let runtime = config
        .resolve_runtime(&config_path, None, ociguard_shim::delegate::HAS_BUILTIN)
        .unwrap_or_else(|_| Runtime::Exec(PathBuf::from("(none)")));
    let logger = Logger::default();
    let ctx = ociguard_shim::Context {
        config: &config,
        runtime: &runtime,
        logger: &logger,
        root: None,
    };
    let plan = ociguard_shim::create::plan(&ctx, &args.id, &args.bundle)
        .with_context(|| format!("explain {}", args.bundle.display()))?;
    let Some(plan) = plan else {
        anyhow::bail!(
            "the audit policy could not be applied; create would start the container unchanged"
        );
    };
    let before: Value = serde_json::from_slice(&plan.original.bytes)?;
    let after = &plan.rewritten.document;
    let changed = plan.rewritten.to_bytes() != plan.original.bytes;
    let diff = json_diff(&before, after);
    let d = &plan.rewritten.decision;
    let profile = profile_status(after, &d.facts, &config.monitor_socket);
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({
            "bundle": args.bundle,
            "decision": d,
            "changed": changed,
            "diff": diff,
            "document": after,
            "apparmor": plan.apparmor.as_ref().map(|a| json!({
                "name": a.profile.name,
                "digest": a.profile.digest,
                "applied": a.load,
                "text": a.profile.text,
            })),
            "egress": plan.egress.as_ref().map(|e| json!({
                "digest": e.ruleset.digest,
                "rules": e.ruleset.rules,
                "networks": e.ruleset.networks,
                "file": e.path,
                "text": e.ruleset.text,
                "nft": serde_json::from_str::<Value>(&ociguard_policy::egress::nft_json(&e.ruleset.program)).unwrap_or(Value::Null),
            })),
            "profile": profile,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "bundle:  {}", args.bundle.display())?;
    writeln!(out, "facts:")?;
    match (&d.facts.image, &d.facts.image_source) {
        (Some(i), Some(src)) => writeln!(out, "  image  {i}  (from {src})")?,
        (Some(i), None) => writeln!(out, "  image  {i}")?,
        _ => writeln!(out, "  image  (unknown: {})", d.facts.image_unresolved())?,
    }
    if !d.facts.image_aliases.is_empty() {
        writeln!(out, "  also named  {}", d.facts.image_aliases.join(", "))?;
    }
    match (&d.facts.image_digest, &d.facts.labels_unresolved) {
        (Some(digest), _) => writeln!(out, "  digest {digest}")?,
        (None, Some(why)) if d.facts.image.is_some() => writeln!(out, "  digest (unknown: {why})")?,
        _ => {}
    }
    if let Some(why) = &d.facts.labels_unresolved {
        writeln!(out, "  labels unresolved: {why}")?;
    }
    for (k, v) in &d.facts.annotations {
        writeln!(out, "  annotation {k}={v:?}")?;
    }
    writeln!(out, "policies considered:")?;
    for c in &d.considered {
        let verdict = if c.matched { "MATCH" } else { "no" };
        writeln!(
            out,
            "  {verdict:<5} {:<24} priority={} conditions={} exact={}  {}",
            c.policy,
            c.specificity.priority,
            c.specificity.conditions,
            c.specificity.exact,
            c.source
        )?;
        for w in &c.why {
            writeln!(out, "          - {w}")?;
        }
    }
    writeln!(
        out,
        "chosen:  {} ({}, {}) {}\n  because: {}",
        d.policy,
        d.mode.as_str(),
        d.policy_digest,
        d.policy_source,
        d.reason
    )?;
    writeln!(out, "changes:")?;
    for c in &d.changes {
        writeln!(out, "  {}", serde_json::to_string(c)?)?;
    }
    if changed {
        writeln!(out, "config.json diff (JSON paths):")?;
        for line in &diff {
            writeln!(out, "  {line}")?;
        }
    } else {
        writeln!(out, "config.json: already as ociguard would write it")?;
    }
    for c in &d.changes {
        if let ociguard_policy::change::Change::Behavior {
            enforcer,
            rules,
            not_held,
            noexec,
        } = c
        {
            writeln!(out, "behavior rules, held by {enforcer}:")?;
            for r in rules {
                writeln!(out, "  {r}")?;
            }
            for r in not_held {
                writeln!(out, "  NOT HELD {r}")?;
            }
            if !noexec.is_empty() {
                writeln!(out, "  noexec: {}", noexec.join(", "))?;
            }
        }
    }
    if let Some(p) = &profile {
        writeln!(
            out,
            "behaviour profile: {}",
            p["summary"].as_str().unwrap_or("")
        )?;
    }
    if let Some(a) = &plan.apparmor {
        let status = if a.load { "applied" } else { "not applied" };
        writeln!(
            out,
            "apparmor profile: {} ({}, {status}; see changes):",
            a.profile.name, a.profile.digest
        )?;
        for line in a.profile.text.lines() {
            writeln!(out, "  {line}")?;
        }
    }
    if let Some(e) = &plan.egress {
        writeln!(
            out,
            "egress ruleset: {} ({} rules, {} networks), installed in the container's network namespace at createRuntime:",
            e.ruleset.digest, e.ruleset.rules, e.ruleset.networks
        )?;
        for line in e.ruleset.text.lines() {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Which learned profile the container would record into or be compared with, and how old it
/// is; `None` when the chosen policy neither learns nor compares.
fn profile_status(
    doc: &Value,
    facts: &ociguard_policy::select::Facts,
    socket: &std::path::Path,
) -> Option<Value> {
    use ociguard_policy::behavior::{Compiled, OnAnomaly, ANNOTATION};
    let compiled: Compiled = doc
        .pointer("/annotations")
        .and_then(|a| a.get(ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|t| serde_json::from_str(t).ok())?;
    if !compiled.observes() {
        return None;
    }
    let role = if compiled.learn {
        "learns into"
    } else {
        "is compared with"
    };
    // The digest as ociguardd records it: the engine's, else the one pinned in the name.
    let digest = facts.image_digest.clone().or_else(|| {
        facts
            .image
            .as_deref()
            .and_then(ociguard_policy::select::pinned_digest)
            .map(str::to_owned)
    });
    let subject = ociguard_policy::profile::Subject::of(
        facts.image.as_deref(),
        digest.as_deref(),
        facts.kubernetes_namespace.as_deref(),
        facts.service_account.as_deref(),
    );
    let Some(subject) = subject else {
        return Some(json!({
            "summary": "no image is known for this container: there is no profile to learn into or compare with",
        }));
    };
    let id = subject.id();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let found = crate::profile_cmd::fetch(Some(socket), Some(&id));
    let summary = match &found {
        Ok((list, _)) => match list.iter().find(|p| p.subject.id() == id) {
            Some(p) => format!(
                "{role} {id} ({}, digest {}): {} container(s), age {}, last change {} ago; on_anomaly = {}",
                subject.identity,
                subject.digest.as_deref().unwrap_or("-"),
                p.containers,
                ociguard_policy::generate::span(now.saturating_sub(p.first_seen)),
                ociguard_policy::generate::span(now.saturating_sub(p.last_seen)),
                compiled.on_anomaly.as_str()
            ),
            None if compiled.learn => format!(
                "{role} {id} ({}), which does not exist yet: the first container starts it",
                subject.identity
            ),
            None => format!(
                "{id} ({}) has not been learned: anomalies cannot be told (one `no-profile` event per container){}",
                subject.identity,
                if compiled.on_anomaly == OnAnomaly::Kill { "; nothing is killed" } else { "" }
            ),
        },
        Err(e) => format!("{role} {id} ({}); ociguardd could not be asked: {e:#}", subject.identity),
    };
    Some(json!({
        "id": id,
        "identity": subject.identity,
        "image_digest": subject.digest,
        "learn": compiled.learn,
        "on_anomaly": compiled.on_anomaly.as_str(),
        "summary": summary,
    }))
}

/// A path-level diff of two JSON documents: `+ path = value`, `- path = value`, `~ path: a -> b`.
/// Arrays of strings (capabilities, syscall names) are diffed as sets so the output says which
/// entries were added or removed rather than re-listing the whole array.
pub fn json_diff(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_at("", a, b, &mut out);
    out
}

fn diff_at(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let p = format!("{path}.{k}");
                match y.get(k) {
                    Some(vb) => diff_at(&p, va, vb, out),
                    None => out.push(format!("- {p} = {}", short(va))),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    out.push(format!("+ {path}.{k} = {}", short(vb)));
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.iter().chain(y).all(Value::is_string) => {
            for v in x.iter().filter(|v| !y.contains(v)) {
                out.push(format!("- {path}[] {v}"));
            }
            for v in y.iter().filter(|v| !x.contains(v)) {
                out.push(format!("+ {path}[] {v}"));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff_at(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            let common = x.len().min(y.len());
            for i in 0..common {
                diff_at(&format!("{path}[{i}]"), &x[i], &y[i], out);
            }
            for (i, v) in x.iter().enumerate().skip(common) {
                out.push(format!("- {path}[{i}] = {}", short(v)));
            }
            for (i, v) in y.iter().enumerate().skip(common) {
                out.push(format!("+ {path}[{i}] = {}", short(v)));
            }
        }
        _ => out.push(format!("~ {path}: {} -> {}", short(a), short(b))),
    }
}

fn short(v: &Value) -> String {
    ociguard_policy::excerpt::excerpt(&v.to_string(), 150).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_paths() {
        let a = json!({"process": {"noNewPrivileges": false, "capabilities": {"bounding": ["A", "B"]}}, "x": [1, 2]});
        let b = json!({"process": {"noNewPrivileges": true, "capabilities": {"bounding": ["A"]}}, "x": [1, 2, 3], "y": 1});
        let d = json_diff(&a, &b);
        assert_eq!(
            d,
            vec![
                "~ .process.noNewPrivileges: false -> true",
                "- .process.capabilities.bounding[] \"B\"",
                "+ .x[2] = 3",
                "+ .y = 1",
            ]
        );
        assert!(json_diff(&a, &a).is_empty());
    }
}
