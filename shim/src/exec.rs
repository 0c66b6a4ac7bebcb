//! `exec`: a new process in an existing container gets no more than the container's policy gave
//! its init process: capabilities are cut to the container's sets, `noNewPrivileges` is forced
//! when the container has it, and the AppArmor profile is the container's.

use std::ffi::OsString;
use std::path::PathBuf;

use ociguard_policy::capabilities;
use ociguard_policy::spec::{self, SpecError};
use ociguard_policy::Mode;
use serde_json::Value;

use crate::argv::ExecArgs;
use crate::bundle::{self, BundleError};
use crate::container_state::{self, ContainerRecord, StateError};
use crate::Context;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("exec in container {id}: {what} is not allowed by policy {policy:?}")]
    Denied {
        id: String,
        policy: String,
        what: String,
    },
    #[error("exec process file {path}: expected a JSON object")]
    NotAnObject { path: PathBuf },
}

/// Returns the argv to hand to the runtime (possibly with `--no-new-privs` added at
/// `flag_index`, the position right after the `exec` token).
pub fn intercept(
    ctx: &Context<'_>,
    args: &ExecArgs,
    argv: &[OsString],
    flag_index: usize,
) -> Result<Vec<OsString>, ExecError> {
    let path = container_state::record_path(&ctx.config.state_dir, ctx.root, &args.id);
    let Some(record) = ContainerRecord::load(&path)? else {
        ctx.logger.debug(&format!(
            "exec {}: no ociguard record ({}): container not created through ociguard",
            args.id,
            path.display()
        ));
        return Ok(argv.to_vec());
    };
    if record.mode == Mode::Audit {
        return Ok(argv.to_vec());
    }
    match &args.process {
        Some(process_path) => {
            let original = bundle::read(process_path)?;
            let mut doc = spec::parse_process(&original.bytes, process_path)?;
            let removed = restrict(&mut doc, &record).ok_or_else(|| ExecError::NotAnObject {
                path: process_path.clone(),
            })?;
            if !removed.is_empty() {
                ctx.logger.info(&format!(
                    "exec {}: policy {:?} removed capabilities {}",
                    args.id,
                    record.policy,
                    removed.join(",")
                ));
            }
            let bytes = spec::to_bytes(&doc);
            if bytes != original.bytes {
                bundle::write_atomic(process_path, &original.meta, &bytes)?;
            }
            Ok(argv.to_vec())
        }
        None => flags_only(&record, args, argv, flag_index),
    }
}

/// Apply the record to a process object; `None` if it is not an object.
fn restrict(doc: &mut Value, record: &ContainerRecord) -> Option<Vec<String>> {
    let process = doc.as_object_mut()?;
    let mut removed = Vec::new();
    if let Some(Value::Object(caps)) = process.get_mut("capabilities") {
        let allowed = record.capabilities.clone().unwrap_or_default();
        removed = capabilities::restrict_to(caps, &allowed);
    }
    if record.no_new_privileges {
        process.insert("noNewPrivileges".to_owned(), Value::Bool(true));
    }
    match &record.apparmor_profile {
        Some(p) => {
            process.insert("apparmorProfile".to_owned(), Value::String(p.clone()));
        }
        None => {
            process.shift_remove("apparmorProfile");
        }
    }
    Some(removed)
}

/// `exec ID cmd...` without a process file: the runtime builds the process from the container's
/// (already rewritten) config, so only the flags can add privileges.
fn flags_only(
    record: &ContainerRecord,
    args: &ExecArgs,
    argv: &[OsString],
    flag_index: usize,
) -> Result<Vec<OsString>, ExecError> {
    let bounding: Vec<String> = record
        .capabilities
        .as_ref()
        .and_then(|c| c.get("bounding"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(capabilities::normalize)
                .collect()
        })
        .unwrap_or_default();
    if let Some(cap) = args
        .caps
        .iter()
        .find(|c| !bounding.contains(&capabilities::normalize(c)))
    {
        return Err(ExecError::Denied {
            id: args.id.clone(),
            policy: record.policy.clone(),
            what: format!("--cap {cap}"),
        });
    }
    if let Some(profile) = &args.apparmor {
        if record.apparmor_profile.as_deref() != Some(profile.as_str()) {
            return Err(ExecError::Denied {
                id: args.id.clone(),
                policy: record.policy.clone(),
                what: format!("--apparmor {profile}"),
            });
        }
    }
    let mut out = argv.to_vec();
    if record.no_new_privileges && !args.no_new_privs {
        // Right after `exec`: among exec's own flags even when a `--` precedes the id.
        out.insert(flag_index.min(out.len()), OsString::from("--no-new-privs"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn record(nnp: bool) -> ContainerRecord {
        ContainerRecord::from_spec(
            "c1",
            Path::new("/b"),
            "strict",
            "sha256:x",
            Mode::Enforce,
            &json!({"process": {"noNewPrivileges": nnp, "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]}}}),
        )
    }

    #[test]
    fn process_file_cannot_regain_privileges() {
        let mut doc = json!({"args": ["sh"], "cwd": "/", "noNewPrivileges": false,
            "apparmorProfile": "unconfined",
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_SYS_ADMIN"], "effective": ["CAP_SYS_ADMIN"]}});
        let removed = restrict(&mut doc, &record(true)).unwrap();
        assert_eq!(removed, vec!["CAP_SYS_ADMIN"]);
        assert_eq!(doc["noNewPrivileges"], true);
        assert!(doc.get("apparmorProfile").is_none());
        assert_eq!(doc["capabilities"]["bounding"], json!(["CAP_CHOWN"]));
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn exec_flags() {
        let argv = os(&["--root", "/r", "exec", "-t", "--", "c1", "sh"]);
        let args = ExecArgs {
            id: "c1".into(),
            id_index: 5,
            ..Default::default()
        };
        let out = flags_only(&record(true), &args, &argv, 3).unwrap();
        assert_eq!(
            out,
            os(&[
                "--root",
                "/r",
                "exec",
                "--no-new-privs",
                "-t",
                "--",
                "c1",
                "sh"
            ])
        );
        let out = flags_only(&record(false), &args, &argv, 3).unwrap();
        assert_eq!(out, argv);

        let args = ExecArgs {
            caps: vec!["CAP_SYS_ADMIN".into()],
            ..args
        };
        let err = flags_only(&record(false), &args, &argv, 3).unwrap_err();
        assert!(err.to_string().contains("--cap CAP_SYS_ADMIN"), "{err}");
        let args = ExecArgs {
            caps: vec!["kill".into()],
            ..args
        };
        assert!(flags_only(&record(false), &args, &argv, 3).is_ok());
        let args = ExecArgs {
            caps: vec![],
            apparmor: Some("unconfined".into()),
            ..args
        };
        assert!(flags_only(&record(false), &args, &argv, 3).is_err());
    }
}
