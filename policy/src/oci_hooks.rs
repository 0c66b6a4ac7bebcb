//! ociguard's own entries in a config.json's `hooks`, shared by identity and egress.
//!
//! Every entry runs `ociguard-hook` by absolute path with `argv[1]` naming its role
//! (`createRuntime`, `poststart`, `poststop` for identity; `egress`), its own minimal `env` (crun
//! runs a hook with exactly the `env` listed: none of the engine's, none of the container's
//! `LD_PRELOAD` or `PATH`) and no `timeout` (the hook bounds its own run time,
//! [`HOOK_DEADLINE_SECS`]). `argv[0]` plus the role is how ociguard recognises its
//! own entries on a retried `create`: they are replaced, never duplicated, and everybody else's
//! hooks keep their order and content.

use std::path::Path;

use serde_json::{json, Map, Value};

/// `argv[0]` of every hook entry ociguard writes.
pub const HOOK_ARGV0: &str = "ociguard-hook";
/// The whole environment a hook gets: no engine or container variables reach it.
pub const HOOK_ENV: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
/// How long a hook may run before it ends itself (`alarm(2)`; crun reports SIGALRM as exit
/// code 141). The hook gives up on the monitor after a few seconds and spools or fails,
/// but the spool's fsync (like the monitor's) can stall for seconds on a node under heavy
/// writeback; this leaves room for that.
///
/// The entries carry no OCI `timeout`: crun (1.8 here) waits for a hook with a timeout by
/// `sigtimedwait` for a SIGCHLD whose `si_pid` is the hook's. Under `crun run` the container's
/// init is crun's child too; when it exits while a `poststart` hook runs, the two SIGCHLDs
/// coalesce into one pending signal, the hook's exit is never seen, and crun kills a hook that
/// already finished after the whole timeout and reports `timeout expired` (3 of 300 runs of a
/// `true` container under CPU load here; none without a timeout, where crun just `waitpid`s).
pub const HOOK_DEADLINE_SECS: u32 = 30;

/// The engine's own log (runc's `--log`/`--log-format`), where the hook writes its errors:
/// crun discards a hook's stdout and stderr and reports only its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLog<'a> {
    pub path: &'a Path,
    pub json: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookEditError {
    #[error("config.json field {field}: expected {expected}")]
    Shape {
        field: String,
        expected: &'static str,
    },
    #[error("{what} {path:?} is not absolute (hooks run with no PATH and an unknown cwd)")]
    RelativePath { what: &'static str, path: String },
}

/// Every path a hook entry names must be absolute.
pub fn require_absolute(paths: &[(&'static str, &Path)]) -> Result<(), HookEditError> {
    match paths.iter().find(|(_, p)| !p.is_absolute()) {
        Some((what, p)) => Err(HookEditError::RelativePath {
            what,
            path: p.display().to_string(),
        }),
        None => Ok(()),
    }
}

/// The entry `ociguard-hook ROLE ARGS... [--log FILE --log-format F]`.
pub fn entry(
    hook_path: &Path,
    role: &str,
    args: &[String],
    engine_log: Option<EngineLog<'_>>,
) -> Value {
    let mut argv = Vec::with_capacity(args.len() + 6);
    argv.push(HOOK_ARGV0.to_owned());
    argv.push(role.to_owned());
    argv.extend(args.iter().cloned());
    if let Some(log) = engine_log {
        argv.extend([
            "--log".to_owned(),
            log.path.display().to_string(),
            "--log-format".to_owned(),
            if log.json { "json" } else { "text" }.to_owned(),
        ]);
    }
    json!({
        "path": hook_path.display().to_string(),
        "args": argv,
        "env": [HOOK_ENV],
    })
}

/// Is `entry` one of ociguard's own, with this role?
pub fn is_ours(entry: &Value, role: &str) -> bool {
    let Some(args) = entry.get("args").and_then(Value::as_array) else {
        return false;
    };
    args.first().and_then(Value::as_str) == Some(HOOK_ARGV0)
        && args.get(1).and_then(Value::as_str) == Some(role)
}

/// Would [`list_mut`] succeed for each of `events`? Lets an edit of several lists check them all
/// before changing any, so that a failed edit leaves the document as it was.
pub fn check_lists(root: &Map<String, Value>, events: &[&str]) -> Result<(), HookEditError> {
    let hooks = match root.get("hooks") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(h)) => h,
        Some(_) => {
            return Err(HookEditError::Shape {
                field: "hooks".to_owned(),
                expected: "an object",
            })
        }
    };
    for event in events {
        if let Some(v) = hooks.get(*event) {
            if !v.is_null() && !v.is_array() {
                return Err(HookEditError::Shape {
                    field: format!("hooks.{event}"),
                    expected: "an array",
                });
            }
        }
    }
    Ok(())
}

/// `hooks.<event>` of a document's root object, created when absent or `null` (some engines
/// write `"hooks": null`).
pub fn list_mut<'a>(
    root: &'a mut Map<String, Value>,
    event: &str,
) -> Result<&'a mut Vec<Value>, HookEditError> {
    let hooks = root
        .entry("hooks")
        .or_insert_with(|| Value::Object(Map::new()));
    if hooks.is_null() {
        *hooks = Value::Object(Map::new());
    }
    let hooks = hooks.as_object_mut().ok_or(HookEditError::Shape {
        field: "hooks".to_owned(),
        expected: "an object",
    })?;
    let list = hooks
        .entry(event)
        .or_insert_with(|| Value::Array(Vec::new()));
    if list.is_null() {
        *list = Value::Array(Vec::new());
    }
    list.as_array_mut().ok_or_else(|| HookEditError::Shape {
        field: format!("hooks.{event}"),
        expected: "an array",
    })
}

/// Make `wanted` the only entry of ours with `role` in `list`, after everybody else's. A list
/// that already holds exactly that is left as it is. Returns whether `list` changed.
pub fn place(list: &mut Vec<Value>, role: &str, wanted: Value) -> bool {
    let ours = list.iter().filter(|e| is_ours(e, role)).count();
    if ours == 1 && list.contains(&wanted) {
        return false;
    }
    list.retain(|e| !is_ours(e, role));
    list.push(wanted);
    true
}

/// Remove our entries with `role` from `hooks.<event>` (nothing is created). Returns whether
/// any were there.
pub fn remove(spec: &mut Value, event: &str, role: &str) -> bool {
    let Some(list) = spec
        .get_mut("hooks")
        .and_then(|h| h.get_mut(event))
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let before = list.len();
    list.retain(|e| !is_ours(e, role));
    list.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placing_is_idempotent_and_keeps_other_hooks() {
        let hook = Path::new("/usr/local/bin/ociguard-hook");
        let mut root = Map::new();
        let list = list_mut(&mut root, "createRuntime").unwrap();
        list.push(json!({"path": "/usr/bin/other"}));
        let wanted = entry(hook, "egress", &["--x".to_owned()], None);
        assert!(place(list, "egress", wanted.clone()));
        assert!(!place(list, "egress", wanted.clone()));
        // another role of ours in the same list is not touched
        assert!(place(
            list,
            "createRuntime",
            entry(hook, "createRuntime", &[], None)
        ));
        let other = entry(hook, "egress", &["--y".to_owned()], None);
        assert!(place(list, "egress", other.clone()));
        assert_eq!(list.len(), 3);
        assert_eq!(list[0]["path"], "/usr/bin/other");
        assert_eq!(list[2], other);
        let mut spec = Value::Object(root);
        assert!(remove(&mut spec, "createRuntime", "egress"));
        assert!(!remove(&mut spec, "createRuntime", "egress"));
        assert!(!remove(&mut spec, "poststop", "egress"));
        assert_eq!(spec["hooks"]["createRuntime"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn entry_shape_and_bad_lists() {
        let log = Path::new("/run/x/log.json");
        let e = entry(
            Path::new("/h"),
            "poststop",
            &[],
            Some(EngineLog {
                path: log,
                json: true,
            }),
        );
        assert_eq!(
            e,
            json!({"path": "/h", "args": ["ociguard-hook", "poststop", "--log", "/run/x/log.json", "--log-format", "json"],
                   "env": [HOOK_ENV]})
        );
        let mut root = json!({"hooks": []});
        let err = list_mut(root.as_object_mut().unwrap(), "poststart").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config.json field hooks: expected an object"
        );
        let mut root = json!({"hooks": {"poststart": {}}});
        let err = list_mut(root.as_object_mut().unwrap(), "poststart").unwrap_err();
        assert!(err.to_string().contains("hooks.poststart"), "{err}");
        let err = require_absolute(&[
            ("nft", Path::new("/usr/sbin/nft")),
            ("hook_path", Path::new("h")),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("hook_path \"h\" is not absolute"),
            "{err}"
        );
    }
}
