//! `exec`: a new process in an existing container gets no more than the container's policy gave
//! its init process: capabilities are cut to the container's sets, `noNewPrivileges` is forced
//! when the container has it, and the AppArmor profile is the container's.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ociguard_policy::annotations;
use ociguard_policy::capabilities;
use ociguard_policy::spec::{self, SpecError};
use ociguard_policy::Mode;
use serde_json::Value;

use crate::argv::ExecArgs;
use crate::bundle::{self, BundleError};
use crate::container_state::{self, ContainerRecord, StateError};
use crate::runtime_state;
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
    #[error("exec in container {id}: refused: ociguard's record of it ({record}) is missing and its policy cannot be verified: {why}")]
    Unrecorded {
        id: String,
        record: PathBuf,
        why: String,
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
    let record = match ContainerRecord::load(&path)? {
        Some(record) => record,
        None => match recover(ctx, &args.id, &path)? {
            Some(record) => record,
            None => return Ok(argv.to_vec()),
        },
    };
    if !record.mode.enforces() {
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

/// ociguard's record of container `id` is missing (removed, or lost with its state directory):
/// the record is what holds `exec` to the container's policy, so its absence must never let an
/// exec through with more than the container was given. Ask the runtime what it created the
/// container with:
/// - the runtime does not know the container, or cannot say: refuse (the exec could not have
///   run either, and nothing is verifiable);
/// - the container carries no ociguard policy annotation: it was not created through ociguard
///   (or under an audit policy that could not be applied): forward, as before;
/// - it does: rebuild the record from the bundle's rewritten `config.json` (a regular file,
///   owned by root or us, not group/world-writable, naming the same policy digest as the
///   runtime's state), store it again, and hold the exec to it. Anything else is a refusal.
fn recover(
    ctx: &Context<'_>,
    id: &str,
    record_path: &Path,
) -> Result<Option<ContainerRecord>, ExecError> {
    let unverifiable = |why: String| ExecError::Unrecorded {
        id: id.to_owned(),
        record: record_path.to_owned(),
        why,
    };
    let state = runtime_state::query(ctx.runtime, ctx.root, id)
        .map_err(|e| unverifiable(format!("the runtime cannot say how it was created: {e}")))?;
    let Some(digest) = state.annotations.get(annotations::POLICY_DIGEST) else {
        ctx.logger.debug(&format!(
            "exec {id}: no ociguard record ({}) and no {} annotation: container not created through ociguard",
            record_path.display(),
            annotations::POLICY_DIGEST
        ));
        return Ok(None);
    };
    let config_path = bundle::config_path(&state.bundle);
    let file = bundle::read(&config_path).map_err(|e| unverifiable(e.to_string()))?;
    let (uid, mode) = (file.meta.uid(), file.meta.mode());
    if uid != 0 && uid != nix::unistd::geteuid().as_raw() {
        return Err(unverifiable(format!(
            "{} is owned by uid {uid}, not root or the runtime's user",
            config_path.display()
        )));
    }
    if mode & 0o022 != 0 {
        return Err(unverifiable(format!(
            "{} is writable by group or others (mode {:04o})",
            config_path.display(),
            mode & 0o7777
        )));
    }
    let spec: Value = serde_json::from_slice(&file.bytes)
        .map_err(|e| unverifiable(format!("parse {}: {e}", config_path.display())))?;
    let ann = |key: &str| {
        spec.get("annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    };
    if ann(annotations::POLICY_DIGEST) != Some(digest.as_str()) {
        return Err(unverifiable(format!(
            "{} names policy digest {:?}, the runtime's state {digest:?}: the bundle changed since create",
            config_path.display(),
            ann(annotations::POLICY_DIGEST).unwrap_or("(none)")
        )));
    }
    // An unknown or missing mode is held as enforce: the record may only tighten.
    let mode = Mode::parse_or_enforce(ann(annotations::POLICY_MODE).unwrap_or(""));
    let policy = ann(annotations::POLICY).unwrap_or("(unnamed)");
    let record = ContainerRecord::from_spec(id, &state.bundle, policy, digest, mode, &spec);
    if let Err(e) = record.save(record_path) {
        // The exec is held by the record in hand either way; the next one will rebuild it again.
        ctx.logger
            .warn(&format!("exec {id}: store the rebuilt record: {e}"));
    }
    ctx.logger.warn(&format!(
        "exec {id}: ociguard's record {} was missing; rebuilt from the runtime's state and {} (policy {policy:?} {digest})",
        record_path.display(),
        config_path.display()
    ));
    Ok(Some(record))
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
    use std::os::unix::fs::PermissionsExt;

    /// A bundle whose config.json ociguard rewrote under `digest`, and a runtime whose `state`
    /// names it (with `state_digest` in its annotations).
    struct Lost {
        dir: tempfile::TempDir,
        config: ociguard_policy::RuntimeConfig,
    }

    impl Lost {
        fn new(digest: &str, state_digest: Option<&str>) -> Lost {
            let dir = tempfile::tempdir().unwrap();
            let bundle = dir.path().join("bundle");
            std::fs::create_dir(&bundle).unwrap();
            let spec = json!({"annotations": {"org.ociguard.policy": "strict",
                "org.ociguard.policy.digest": digest, "org.ociguard.policy.mode": "enforce"},
                "process": {"noNewPrivileges": true, "capabilities": {"bounding": ["CAP_KILL"]}}});
            std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
            let ann = state_digest.map_or_else(String::new, |d| {
                format!(r#","annotations":{{"org.ociguard.policy.digest":"{d}"}}"#)
            });
            let rt = dir.path().join("rt");
            std::fs::write(
                &rt,
                format!(
                    "#!/bin/sh\necho '{{\"id\":\"c1\",\"status\":\"running\",\"bundle\":\"{}\"{ann}}}'\n",
                    bundle.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o755)).unwrap();
            let config = ociguard_policy::RuntimeConfig {
                state_dir: dir.path().join("state"),
                ..Default::default()
            };
            Lost { dir, config }
        }
        fn exec(&self) -> Result<Vec<OsString>, ExecError> {
            let logger = crate::logging::Logger::default();
            let rt = ociguard_policy::config::Runtime::Exec(self.dir.path().join("rt"));
            let ctx = Context {
                config: &self.config,
                runtime: &rt,
                logger: &logger,
                root: None,
            };
            let argv = os(&["exec", "--cap", "CAP_SYS_ADMIN", "c1", "sh"]);
            let args = ExecArgs {
                id: "c1".into(),
                id_index: 3,
                caps: vec!["CAP_SYS_ADMIN".into()],
                ..Default::default()
            };
            intercept(&ctx, &args, &argv, 1)
        }
        fn config_json(&self) -> PathBuf {
            self.dir.path().join("bundle/config.json")
        }
    }

    #[test]
    fn a_lost_record_is_rebuilt_from_the_runtime_and_holds_the_exec() {
        let lost = Lost::new("sha256:a", Some("sha256:a"));
        let err = lost.exec().unwrap_err().to_string();
        assert!(err.contains("--cap CAP_SYS_ADMIN"), "{err}");
        let path = container_state::record_path(&lost.config.state_dir, None, "c1");
        let rebuilt = ContainerRecord::load(&path).unwrap().unwrap();
        assert_eq!(rebuilt.policy, "strict");
        assert!(rebuilt.no_new_privileges);
    }

    #[test]
    fn a_lost_record_that_cannot_be_verified_refuses_the_exec() {
        // The bundle was changed to another policy since create.
        let lost = Lost::new("sha256:other", Some("sha256:a"));
        let err = lost.exec().unwrap_err().to_string();
        assert!(
            err.contains("refused") && err.contains("bundle changed"),
            "{err}"
        );
        // Anybody may write the bundle's config.
        let lost = Lost::new("sha256:a", Some("sha256:a"));
        std::fs::set_permissions(lost.config_json(), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        let err = lost.exec().unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");
        // A symlink in its place.
        let lost = Lost::new("sha256:a", Some("sha256:a"));
        let target = lost.dir.path().join("elsewhere.json");
        std::fs::rename(lost.config_json(), &target).unwrap();
        std::os::unix::fs::symlink(&target, lost.config_json()).unwrap();
        let err = lost.exec().unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        // The runtime does not know the container.
        let lost = Lost::new("sha256:a", Some("sha256:a"));
        std::fs::write(
            lost.dir.path().join("rt"),
            "#!/bin/sh\necho 'container does not exist' >&2\nexit 1\n",
        )
        .unwrap();
        let err = lost.exec().unwrap_err().to_string();
        assert!(
            err.contains("container does not exist") && err.contains("refused"),
            "{err}"
        );
    }

    #[test]
    fn a_container_without_ociguard_annotations_is_forwarded() {
        let lost = Lost::new("sha256:a", None);
        let out = lost.exec().unwrap();
        assert_eq!(out, os(&["exec", "--cap", "CAP_SYS_ADMIN", "c1", "sh"]));
    }

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
