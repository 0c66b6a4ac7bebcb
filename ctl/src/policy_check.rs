//! `ociguardctl policy check [DIR]`: validate every policy file, report file:line errors, and
//! whether the config and the policies may be trusted (see `ociguard_policy::trust`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ociguard_policy::config::ConfigError;
use ociguard_policy::load::PolicyError;
use ociguard_policy::trust::Trust;
use ociguard_policy::{PolicySet, RuntimeConfig};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Policy directory (default: `policy_dir` of the ociguard config).
    dir: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    // The config is loaded even when DIR is given: its admin_uid decides who may own policies,
    // and a config that is untrusted or broken would fail every create, so it is a problem to
    // report here like any other. Without it the directory is still checked (admin_uid unset).
    let config_path = RuntimeConfig::path_from_env();
    let (config, config_error) = match RuntimeConfig::load(&config_path) {
        Ok(config) => (Some(config), None),
        Err(e) => (None, Some(e)),
    };
    let dir = match (&args.dir, &config) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(config)) => Some(config.policy_dir.clone()),
        // No config, no policy directory to check: the config's error is the report.
        (None, None) => None,
    };
    let trust = Trust::new(config.as_ref().and_then(|c| c.admin_uid));
    let result = dir.as_deref().map(|dir| PolicySet::load_dir(dir, &trust));
    let mut errors: Vec<serde_json::Value> = Vec::new();
    let mut messages: Vec<String> = Vec::new();
    if let Some(e) = &config_error {
        errors.push(config_error_json(&config_path, e));
        // Every ConfigError of `load` names the file.
        messages.push(e.to_string());
    }
    if let Some(Err(load)) = &result {
        errors.extend(load.0.iter().map(error_json));
        messages.extend(load.0.iter().map(ToString::to_string));
    }
    let set = match &result {
        Some(Ok(set)) => Some(set),
        _ => None,
    };
    let ok = errors.is_empty();
    let mut out = std::io::stdout().lock();
    if args.json {
        let policies: Vec<serde_json::Value> = set
            .map(|set| {
                set.iter()
                    .map(|p| {
                        json!({
                        "name": p.name(), "source": p.source_display(), "digest": p.digest,
                        "mode": p.policy.mode})
                    })
                    .collect()
            })
            .unwrap_or_default();
        let doc = json!({
            "dir": dir,
            "config": config_path,
            "valid": ok,
            "policies": if ok { policies } else { Vec::new() },
            "errors": errors,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        let shown = dir.as_deref().unwrap_or(&config_path).display();
        match set {
            Some(set) if ok => {
                for p in set.iter() {
                    writeln!(
                        out,
                        "ok  {:<24} {:<8} {}  {}",
                        p.name(),
                        p.policy.mode.as_str(),
                        p.digest,
                        p.source_display()
                    )?;
                }
                writeln!(
                    out,
                    "{shown}: {} policies valid",
                    set.policies.len() + usize::from(set.default.source.is_some())
                )?;
            }
            _ => {
                for m in &messages {
                    writeln!(out, "{m}")?;
                }
                writeln!(out, "{shown}: {} error(s)", messages.len())?;
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `file` is always the file or directory the error is about (for a trust problem: the policy
/// or directory as configured; the message names the component at fault).
fn error_json(e: &PolicyError) -> serde_json::Value {
    let (line, column) = match e.location() {
        Some(loc) => (Some(loc.line), Some(loc.column)),
        None => (None, None),
    };
    json!({"file": e.path(), "line": line, "column": column, "message": e.to_string()})
}

fn config_error_json(path: &Path, e: &ConfigError) -> serde_json::Value {
    match e {
        ConfigError::Parse { location, .. } => json!({
            "file": location.path, "line": location.line, "column": location.column,
            "message": e.to_string()}),
        _ => json!({"file": path, "line": null, "column": null, "message": e.to_string()}),
    }
}
