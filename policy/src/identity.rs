//! The OCI hooks that register a container's identity with ociguardd (`[identity]` of a policy).
//!
//! `ociguard create` adds `ociguard-hook` to `hooks.createRuntime` (registered, before the
//! workload can run), `hooks.poststart` (running) and `hooks.poststop` (exited). Hooks run on the
//! host with crun's privileges, so each entry names the hook by absolute path and carries its own
//! minimal `env`: crun runs a hook with exactly the `env` listed (none of the engine's, none of
//! the container's `LD_PRELOAD` or `PATH`).
//!
//! Pure: this edits a JSON tree. Whether the hook binary exists, and whether the monitor is up,
//! is decided by the caller (the shim), which owns the I/O.

use std::path::Path;

use serde_json::Value;

use crate::model::{IdentityMode, Mode};
use crate::oci_hooks::{self, EngineLog, HookEditError};

/// The lifecycle points ociguard hooks into, with their OCI names (also `argv[1]` of the hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookEvent {
    /// After the runtime created the container's namespaces and cgroup, before `pivot_root`
    /// and long before the user's process runs: a failure here aborts the create.
    CreateRuntime,
    /// After the user's process started.
    Poststart,
    /// After the container was deleted.
    Poststop,
}

impl HookEvent {
    pub const ALL: [HookEvent; 3] = [
        HookEvent::CreateRuntime,
        HookEvent::Poststart,
        HookEvent::Poststop,
    ];

    /// The key under `hooks` in config.json, and the hook's `argv[1]`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::CreateRuntime => "createRuntime",
            HookEvent::Poststart => "poststart",
            HookEvent::Poststop => "poststop",
        }
    }

    pub fn parse(s: &str) -> Option<HookEvent> {
        HookEvent::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// `required` or `best-effort`, as the hook's `--identity` takes it.
pub fn mode_arg(mode: IdentityMode) -> &'static str {
    match mode {
        IdentityMode::Off => "off",
        IdentityMode::BestEffort => "best-effort",
        IdentityMode::Required => "required",
    }
}

/// The identity mode that applies: an `audit` policy denies nothing, so it cannot refuse a
/// container because the monitor is down either; `required` degrades to `best-effort`.
pub fn effective_mode(identity: IdentityMode, policy: Mode) -> IdentityMode {
    match (identity, policy) {
        (IdentityMode::Required, Mode::Audit | Mode::Learn) => IdentityMode::BestEffort,
        (m, _) => m,
    }
}

/// Where the hook finds everything: all absolute paths from the node's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookTarget<'a> {
    pub hook_path: &'a Path,
    pub monitor_socket: &'a Path,
    pub spool_dir: &'a Path,
    pub engine_log: Option<EngineLog<'a>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("config.json is not a JSON object")]
    NotAnObject,
    #[error(transparent)]
    Hooks(#[from] HookEditError),
}

/// The hook entry for `event`.
pub fn hook_entry(event: HookEvent, mode: IdentityMode, target: &HookTarget<'_>) -> Value {
    let args = [
        "--identity".to_owned(),
        mode_arg(mode).to_owned(),
        "--socket".to_owned(),
        target.monitor_socket.display().to_string(),
        "--spool".to_owned(),
        target.spool_dir.display().to_string(),
    ];
    oci_hooks::entry(target.hook_path, event.as_str(), &args, target.engine_log)
}

/// Put ociguard's identity hooks into `spec` (a whole config.json document) for `mode`, after
/// the hooks already there, and return whether the document changed.
///
/// Idempotent: an entry of ours that is already there as wanted is left in place; a stale one
/// (other socket, mode or hook path from an earlier `create`) is replaced, never duplicated.
/// With [`IdentityMode::Off`] our entries are removed, so changing a policy takes effect on a
/// retried `create` as well. Everybody else's hooks keep their order and content.
///
/// All or nothing: on error the document is unchanged.
pub fn inject_hooks(
    spec: &mut Value,
    mode: IdentityMode,
    target: &HookTarget<'_>,
) -> Result<bool, IdentityError> {
    oci_hooks::require_absolute(&[
        ("hook_path", target.hook_path),
        ("monitor_socket", target.monitor_socket),
        ("spool_dir", target.spool_dir),
    ])?;
    if !spec.is_object() {
        return Err(IdentityError::NotAnObject);
    }
    let mut changed = false;
    if mode == IdentityMode::Off {
        for event in HookEvent::ALL {
            changed |= oci_hooks::remove(spec, event.as_str(), event.as_str());
        }
        return Ok(changed);
    }
    let root = spec.as_object_mut().ok_or(IdentityError::NotAnObject)?;
    oci_hooks::check_lists(root, &HookEvent::ALL.map(HookEvent::as_str))?;
    for event in HookEvent::ALL {
        let list = oci_hooks::list_mut(root, event.as_str())?;
        changed |= oci_hooks::place(list, event.as_str(), hook_entry(event, mode, target));
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci_hooks::{is_ours, HOOK_ENV};
    use serde_json::json;
    use std::path::PathBuf;

    fn target() -> (PathBuf, PathBuf, PathBuf) {
        (
            PathBuf::from("/usr/local/bin/ociguard-hook"),
            PathBuf::from("/run/ociguard/monitor.sock"),
            PathBuf::from("/var/lib/ociguard/spool"),
        )
    }

    fn with<R>(f: impl FnOnce(&HookTarget<'_>) -> R) -> R {
        let (h, s, p) = target();
        f(&HookTarget {
            hook_path: &h,
            monitor_socket: &s,
            spool_dir: &p,
            engine_log: None,
        })
    }

    #[test]
    fn appended_after_existing_hooks_and_idempotent() {
        let mut spec = json!({
            "ociVersion": "1.0.2",
            "hooks": {
                "createRuntime": [{"path": "/usr/bin/nvidia-hook", "args": ["nvidia-hook", "x"]}],
                "prestart": [{"path": "/bin/true"}]
            }
        });
        let changed = with(|t| inject_hooks(&mut spec, IdentityMode::Required, t)).unwrap();
        assert!(changed);
        let cr = spec["hooks"]["createRuntime"].as_array().unwrap();
        assert_eq!(cr.len(), 2);
        assert_eq!(cr[0]["path"], "/usr/bin/nvidia-hook");
        assert_eq!(cr[1]["path"], "/usr/local/bin/ociguard-hook");
        assert_eq!(
            cr[1]["args"],
            json!([
                "ociguard-hook",
                "createRuntime",
                "--identity",
                "required",
                "--socket",
                "/run/ociguard/monitor.sock",
                "--spool",
                "/var/lib/ociguard/spool"
            ])
        );
        assert_eq!(cr[1]["env"], json!([HOOK_ENV]));
        assert_eq!(spec["hooks"]["prestart"], json!([{"path": "/bin/true"}]));
        assert_eq!(spec["hooks"]["poststart"].as_array().unwrap().len(), 1);
        assert_eq!(spec["hooks"]["poststop"].as_array().unwrap().len(), 1);

        let before = spec.clone();
        let changed = with(|t| inject_hooks(&mut spec, IdentityMode::Required, t)).unwrap();
        assert!(!changed);
        assert_eq!(spec, before, "a retried create must not duplicate hooks");
    }

    #[test]
    fn stale_entries_are_replaced_not_duplicated() {
        let mut spec = json!({});
        with(|t| inject_hooks(&mut spec, IdentityMode::BestEffort, t)).unwrap();
        // Someone appended a hook after ours; then the mode changed.
        spec["hooks"]["poststop"]
            .as_array_mut()
            .unwrap()
            .push(json!({"path": "/bin/other"}));
        let changed = with(|t| inject_hooks(&mut spec, IdentityMode::Required, t)).unwrap();
        assert!(changed);
        let ps = spec["hooks"]["poststop"].as_array().unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0]["path"], "/bin/other");
        assert_eq!(ps[1]["args"][3], "required");
        for e in HookEvent::ALL {
            let n = spec["hooks"][e.as_str()]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| is_ours(x, e.as_str()))
                .count();
            assert_eq!(n, 1, "{e:?}");
        }
    }

    #[test]
    fn off_removes_only_ours() {
        let mut spec = json!({"hooks": {"poststart": [{"path": "/bin/x"}]}});
        with(|t| inject_hooks(&mut spec, IdentityMode::BestEffort, t)).unwrap();
        assert!(with(|t| inject_hooks(&mut spec, IdentityMode::Off, t)).unwrap());
        assert_eq!(spec["hooks"]["poststart"], json!([{"path": "/bin/x"}]));
        assert_eq!(spec["hooks"]["createRuntime"], json!([]));
        assert!(!with(|t| inject_hooks(&mut spec, IdentityMode::Off, t)).unwrap());
        let mut bare = json!({"process": {}});
        assert!(!with(|t| inject_hooks(&mut bare, IdentityMode::Off, t)).unwrap());
        assert_eq!(bare, json!({"process": {}}));
    }

    #[test]
    fn engine_log_is_passed_to_the_hook() {
        let (h, s, p) = target();
        let log = PathBuf::from("/run/containerd/x/log.json");
        let t = HookTarget {
            hook_path: &h,
            monitor_socket: &s,
            spool_dir: &p,
            engine_log: Some(EngineLog {
                path: &log,
                json: true,
            }),
        };
        let e = hook_entry(HookEvent::Poststop, IdentityMode::BestEffort, &t);
        let args: Vec<&str> = e["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            &args[8..],
            &[
                "--log",
                "/run/containerd/x/log.json",
                "--log-format",
                "json"
            ]
        );
    }

    #[test]
    fn bad_shapes_and_relative_paths() {
        let err = with(|t| inject_hooks(&mut json!({"hooks": []}), IdentityMode::Required, t))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "config.json field hooks: expected an object"
        );
        let err = with(|t| {
            inject_hooks(
                &mut json!({"hooks": {"poststart": {}}}),
                IdentityMode::Required,
                t,
            )
        })
        .unwrap_err();
        assert!(err.to_string().contains("hooks.poststart"), "{err}");
        assert_eq!(
            with(|t| inject_hooks(&mut json!([]), IdentityMode::Required, t)),
            Err(IdentityError::NotAnObject)
        );
        let rel = PathBuf::from("ociguard-hook");
        let (_, s, p) = target();
        let t = HookTarget {
            hook_path: &rel,
            monitor_socket: &s,
            spool_dir: &p,
            engine_log: None,
        };
        let err = inject_hooks(&mut json!({}), IdentityMode::Required, &t).unwrap_err();
        assert!(err.to_string().contains("not absolute"), "{err}");
        // all or nothing: a bad list later in the order leaves the earlier ones untouched
        let mut spec = json!({"hooks": {"createRuntime": [], "poststop": {}}});
        let before = spec.clone();
        assert!(with(|t| inject_hooks(&mut spec, IdentityMode::Required, t)).is_err());
        assert_eq!(spec, before);
        // null hooks are treated as absent (some engines write "hooks": null)
        let mut spec = json!({"hooks": null});
        assert!(with(|t| inject_hooks(&mut spec, IdentityMode::Required, t)).unwrap());
    }

    #[test]
    fn audit_degrades_required() {
        assert_eq!(
            effective_mode(IdentityMode::Required, Mode::Audit),
            IdentityMode::BestEffort
        );
        assert_eq!(
            effective_mode(IdentityMode::Required, Mode::Enforce),
            IdentityMode::Required
        );
        assert_eq!(
            effective_mode(IdentityMode::Off, Mode::Audit),
            IdentityMode::Off
        );
        assert_eq!(
            HookEvent::parse("createRuntime"),
            Some(HookEvent::CreateRuntime)
        );
        assert_eq!(HookEvent::parse("prestart"), None);
    }
}
