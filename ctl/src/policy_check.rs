//! `ociguardctl policy check [DIR]`: validate every policy file, report file:line errors.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

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
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => RuntimeConfig::load(&RuntimeConfig::path_from_env())?.policy_dir,
    };
    let result = PolicySet::load_dir(&dir, &Trust::new(None));
    let mut out = std::io::stdout().lock();
    let ok = result.is_ok();
    if args.json {
        let doc = match &result {
            Ok(set) => json!({
                "dir": dir,
                "valid": true,
                "policies": set.iter().map(|p| json!({
                    "name": p.name(), "source": p.source_display(), "digest": p.digest,
                    "mode": p.policy.mode})).collect::<Vec<_>>(),
                "errors": [],
            }),
            Err(errors) => json!({
                "dir": dir,
                "valid": false,
                "policies": [],
                "errors": errors.0.iter().map(error_json).collect::<Vec<_>>(),
            }),
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        match &result {
            Ok(set) => {
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
                    "{}: {} policies valid",
                    dir.display(),
                    set.policies.len() + usize::from(set.default.source.is_some())
                )?;
            }
            Err(errors) => {
                for e in &errors.0 {
                    writeln!(out, "{e}")?;
                }
                writeln!(out, "{}: {} error(s)", dir.display(), errors.0.len())?;
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn error_json(e: &PolicyError) -> serde_json::Value {
    match e.location() {
        Some(loc) => {
            json!({"file": loc.path, "line": loc.line, "column": loc.column, "message": e.to_string()})
        }
        None => json!({"file": null, "line": null, "column": null, "message": e.to_string()}),
    }
}
