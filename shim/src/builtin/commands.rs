//! One function per runc command, each a thin use of libcontainer.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt};
use libcontainer::config::YoukiConfig;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::error::LibcontainerError;
use libcontainer::oci_spec::runtime::{Hook, Hooks, LinuxResources, Spec};
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use nix::unistd::Pid;
use serde_json::{json, Map, Value};

use super::workload::WorkloadExecutor;
use super::{foreground, root_of, BuiltinError};
use crate::argv::{Command, CreateArgs, ExecArgs, Invocation};
use crate::logging::Logger;

type Result<T> = std::result::Result<T, BuiltinError>;

pub(super) fn dispatch(inv: &Invocation, logger: &Logger) -> Result<ExitCode> {
    let root = root_of(inv);
    let systemd =
        inv.global.systemd_cgroup || inv.global.cgroup_manager.as_deref() == Some("systemd");
    match &inv.command {
        Command::Create(c) => create(root, c, systemd, true).map(|_| ExitCode::SUCCESS),
        Command::Run(c) => run(root, c, systemd, logger),
        Command::Start(a) => {
            start(&mut load(root, &a.id)?, root, logger)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::State(a) => {
            let doc = state_document(&load(root, &a.id)?);
            let mut out = serde_json::to_vec_pretty(&doc).map_err(|e| json_err("state", &e))?;
            out.push(b'\n');
            print(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Kill(k) => {
            let name = k.signal.as_deref().unwrap_or("SIGTERM");
            let signal = Signal::try_from(name).map_err(|_| {
                BuiltinError::Usage(format!("kill {}: unknown signal {name:?}", k.id))
            })?;
            let mut c = load(root, &k.id)?;
            c.kill(signal, k.all)
                .map_err(|e| BuiltinError::runtime(format!("kill {}", k.id), &e))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete(d) => {
            let dir = root.join(&d.id);
            if d.force && valid_id(&d.id) && !dir.join("state.json").exists() {
                // runc: `delete --force` of a container that is gone succeeds; what a create
                // that never finished left behind goes with it.
                return match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BuiltinError::Io {
                        what: format!("delete {}: remove {}", d.id, dir.display()),
                        source: e,
                    }),
                    _ => Ok(ExitCode::SUCCESS),
                };
            }
            delete(root, &d.id, d.force, logger)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause(a) => {
            load(root, &a.id)?
                .pause()
                .map_err(|e| BuiltinError::runtime(format!("pause {}", a.id), &e))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume(a) => {
            load(root, &a.id)?
                .resume()
                .map_err(|e| BuiltinError::runtime(format!("resume {}", a.id), &e))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ps { id, format } => ps(root, id, format.as_deref()),
        Command::Update { id, resources } => update(root, id, resources.as_deref()),
        Command::Exec(e) => exec(root, e),
        Command::Help => {
            print(USAGE.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        other => Err(BuiltinError::Unsupported {
            command: other.name().to_owned(),
            hint: match other {
                Command::Restore(_) | Command::Checkpoint(_) => {
                    " (checkpoint/restore needs crun or runc with CRIU)"
                }
                _ => "",
            },
        }),
    }
}

const USAGE: &str = "\
ociguard (builtin runtime: youki libcontainer)

commands: create, run, start, state, kill, delete, ps, exec, pause, resume, update,
features, --version. Options and output as runc's.
";

/// The state `ociguard state` prints for `id` under `root` (the engine's `--root`, or the
/// default), as runc prints it.
pub fn state_json(root: Option<&Path>, id: &str) -> Result<Vec<u8>> {
    let root = root.unwrap_or(Path::new(super::DEFAULT_ROOT));
    serde_json::to_vec(&state_document(&load(root, id)?)).map_err(|e| json_err("state", &e))
}

/// An id is one path component: never let `../x` name another directory.
fn valid_id(id: &str) -> bool {
    !(id.is_empty() || id.contains('/') || id == "." || id == "..")
}

fn load(root: &Path, id: &str) -> Result<Container> {
    if !valid_id(id) {
        return Err(BuiltinError::Usage(format!("invalid container id {id:?}")));
    }
    let dir = root.join(id);
    if !dir.join("state.json").exists() {
        return Err(BuiltinError::NotFound {
            id: id.to_owned(),
            root: root.to_owned(),
        });
    }
    Container::load(dir)
        .map_err(|e| BuiltinError::runtime(format!("container {id}: load its state"), &e))
}

fn create(root: &Path, c: &CreateArgs, systemd: bool, detach: bool) -> Result<Container> {
    let what = || format!("create {}", c.id);
    let builder = ContainerBuilder::new(c.id.clone(), SyscallType::default())
        .with_root_path(root)
        .and_then(|b| b.with_pid_file(c.pid_file.as_ref()))
        .and_then(|b| b.validate_id())
        .map_err(|e| BuiltinError::runtime(what(), &e))?
        .with_console_socket(c.console_socket.as_ref())
        .with_preserved_fds(c.preserve_fds.unwrap_or(0).try_into().unwrap_or(i32::MAX))
        .with_executor(WorkloadExecutor::init());
    let bundle = absolute(&c.bundle)?;
    let config_path = bundle.join("config.json");
    let config = std::fs::read(&config_path).map_err(|source| BuiltinError::Io {
        what: format!("{}: read {}", what(), config_path.display()),
        source,
    })?;
    let new_netns = super::network::creates_netns(&config).map_err(|e| BuiltinError::Runtime {
        what: what(),
        message: format!("{}: {e}", config_path.display()),
    })?;
    adapt_mounts(&bundle, &config).map_err(|message| BuiltinError::Runtime {
        what: what(),
        message,
    })?;
    std::fs::create_dir_all(root).map_err(|source| BuiltinError::Io {
        what: format!("create the state root {}", root.display()),
        source,
    })?;
    let mut container = builder
        .as_init(bundle)
        .with_systemd(systemd)
        .with_detach(detach)
        .with_no_pivot(c.no_pivot)
        .build()
        .map_err(|e| BuiltinError::runtime(what(), &e))?;
    // What libcontainer leaves undone, while the container waits for `start`.
    let finish = || -> std::result::Result<(), String> {
        if new_netns {
            match container.pid() {
                Some(pid) => super::network::loopback_up(pid)?,
                None => return Err("the container has no process".to_owned()),
            }
        }
        disable_oom_killer(&container, &config)
    };
    if let Err(message) = finish() {
        // Half-created is worse than not created: the engine sees a failed create.
        let _ = container.delete(true);
        return Err(BuiltinError::Runtime {
            what: what(),
            message,
        });
    }
    Ok(container)
}

/// `delete`, with its poststop hooks run by [`warn_on_hook_failure`].
fn delete(root: &Path, id: &str, force: bool, logger: &Logger) -> Result<()> {
    let mut c = load(root, id)?;
    warn_on_hook_failure(&mut c, &root.join(id), Phase::Poststop, logger, |c| {
        c.delete(force)
    })
    .map_err(|e| e.named(format!("delete {id}")))
}

/// `start`, with its poststart hooks run by [`warn_on_hook_failure`].
fn start(container: &mut Container, root: &Path, logger: &Logger) -> Result<()> {
    let id = container.id().to_owned();
    warn_on_hook_failure(
        container,
        &root.join(&id),
        Phase::Poststart,
        logger,
        Container::start,
    )
    .map_err(|e| e.named(format!("start {id}")))
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Poststart,
    Poststop,
}

impl Phase {
    /// Replace this phase's hooks in `hooks` with `with`; the ones it had.
    fn swap(self, hooks: &mut Hooks, with: Option<Vec<Hook>>) -> Option<Vec<Hook>> {
        let had = match self {
            Phase::Poststart => hooks.poststart().clone(),
            Phase::Poststop => hooks.poststop().clone(),
        };
        match self {
            Phase::Poststart => hooks.set_poststart(with),
            Phase::Poststop => hooks.set_poststop(with),
        };
        had
    }
}

/// What [`warn_on_hook_failure`] could not do.
enum HookedError {
    Runtime(LibcontainerError),
    Config(libcontainer::config::ConfigError),
}

impl HookedError {
    fn named(self, what: String) -> BuiltinError {
        match self {
            HookedError::Runtime(e) => BuiltinError::runtime(what, &e),
            HookedError::Config(e) => BuiltinError::runtime(format!("{what}: its config"), &e),
        }
    }
}

/// Run `step` (libcontainer's start or delete) without `phase`'s hooks, then run them one by
/// one. The runtime spec makes a failing poststart or poststop hook a warning: "the remaining
/// hooks and lifecycle continue as if the hook had succeeded". libcontainer instead stops at
/// the first failure and fails the command: after the container was started, or before its
/// state was removed, leaving a container that no retried delete can remove (the hook fails
/// again). So the hooks are taken out of libcontainer's copy of the config for `step`, and put
/// back if `step` itself fails (a running container deleted without --force, say).
fn warn_on_hook_failure(
    c: &mut Container,
    dir: &Path,
    phase: Phase,
    logger: &Logger,
    step: impl FnOnce(&mut Container) -> std::result::Result<(), LibcontainerError>,
) -> std::result::Result<(), HookedError> {
    let mut config = YoukiConfig::load(dir).map_err(HookedError::Config)?;
    let taken = config.hooks.as_mut().and_then(|h| phase.swap(h, None));
    if taken.is_some() {
        config.save(dir).map_err(HookedError::Config)?;
    }
    if let Err(e) = step(c) {
        if let (Some(hooks), Some(h)) = (&taken, config.hooks.as_mut()) {
            phase.swap(h, Some(hooks.clone()));
            if let Err(e) = config.save(dir) {
                logger.warn(&format!(
                    "container {}: put its {phase:?} hooks back: {}",
                    c.id(),
                    super::chain(&e)
                ));
            }
        }
        return Err(HookedError::Runtime(e));
    }
    // poststart hooks run in the container's state directory, as libcontainer runs them.
    let cwd = matches!(phase, Phase::Poststart).then_some(dir);
    for hook in taken.iter().flatten() {
        let one = vec![hook.clone()];
        if let Err(e) = libcontainer::hooks::run_hooks(Some(&one), Some(&c.state), cwd, None, None)
        {
            logger.warn(&format!(
                "container {}: {phase:?} hook {}: {}",
                c.id(),
                hook.path().display(),
                super::chain(&e)
            ));
        }
    }
    Ok(())
}

fn run(root: &Path, c: &CreateArgs, systemd: bool, logger: &Logger) -> Result<ExitCode> {
    let mut container = create(root, c, systemd, c.detach)?;
    start(&mut container, root, logger)?;
    if c.detach {
        return Ok(ExitCode::SUCCESS);
    }
    let pid = container.pid().ok_or_else(|| BuiltinError::Runtime {
        what: format!("run {}", c.id),
        message: "the container has no process".to_owned(),
    })?;
    let code = foreground::wait(pid)?;
    // runc run removes a container it ran in the foreground once it exits.
    if let Err(e) = delete(root, &c.id, true, logger) {
        logger.warn(&e.to_string());
    }
    Ok(code)
}

fn exec(root: &Path, e: &ExecArgs) -> Result<ExitCode> {
    let what = || format!("exec {}", e.id);
    if e.process.is_none() && e.tty {
        return Err(BuiltinError::Usage(format!(
            "{}: --tty needs --process (a process.json with terminal: true)",
            what()
        )));
    }
    let (user, group) = match e.user.as_deref() {
        None => (None, None),
        Some(u) => parse_user(u).ok_or_else(|| {
            BuiltinError::Usage(format!("{}: --user {u:?}: expected UID[:GID]", what()))
        })?,
    };
    let gids = e
        .additional_gids
        .iter()
        .map(|g| g.parse::<u32>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| {
            BuiltinError::Usage(format!("{}: --additional-gids: expected numbers", what()))
        })?;
    let env: HashMap<String, String> = e
        .env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    let args = e
        .args
        .iter()
        .map(|a| a.to_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| BuiltinError::Usage(format!("{}: arguments must be UTF-8", what())))?;
    // The container must exist before anything is spawned; its seccomp profile goes with
    // the new process (see workload.rs).
    let container = load(root, &e.id)?;
    let config = container.bundle().join("config.json");
    let spec = Spec::load(&config).map_err(|err| {
        BuiltinError::runtime(format!("{}: read {}", what(), config.display()), &err)
    })?;
    let executor = WorkloadExecutor::exec(spec.linux().as_ref().and_then(|l| l.seccomp().clone()))
        .map_err(|message| BuiltinError::Runtime {
            what: what(),
            message,
        })?;
    let pid = ContainerBuilder::new(e.id.clone(), SyscallType::default())
        .with_root_path(root)
        .and_then(|b| b.with_pid_file(e.pid_file.as_ref()))
        .map_err(|err| BuiltinError::runtime(what(), &err))?
        .with_console_socket(e.console_socket.as_ref())
        .with_preserved_fds(e.preserve_fds.unwrap_or(0).try_into().unwrap_or(i32::MAX))
        .with_executor(executor)
        .as_tenant()
        .with_detach(e.detach)
        .with_cwd(e.cwd.as_ref())
        .with_env(env)
        .with_process(e.process.as_ref())
        .with_no_new_privs(e.no_new_privs)
        .with_capabilities(e.caps.clone())
        .with_container_args(args)
        .with_user(user)
        .with_group(group)
        .with_additional_gids(gids)
        .build()
        .map_err(|err| BuiltinError::runtime(what(), &err))?;
    if e.detach {
        Ok(ExitCode::SUCCESS)
    } else {
        foreground::wait(pid)
    }
}

/// `UID[:GID]`, numbers only (runc resolves names in the container; engines pass numbers).
fn parse_user(u: &str) -> Option<(Option<u32>, Option<u32>)> {
    let (uid, gid) = match u.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (u, None),
    };
    let uid = uid.parse().ok()?;
    let gid = match gid {
        Some(g) => Some(g.parse().ok()?),
        None => None,
    };
    Some((Some(uid), gid))
}

/// The cgroup manager of a loaded container.
fn cgroup_manager(container: &Container) -> Result<libcgroups::common::AnyCgroupManager> {
    let id = container.id();
    let config = container
        .spec()
        .map_err(|e| BuiltinError::runtime(format!("container {id}: read its config"), &e))?;
    libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: config.cgroup_path,
        systemd_cgroup: container.systemd(),
        container_name: id.to_owned(),
    })
    .map_err(|e| BuiltinError::runtime(format!("container {id}: its cgroup"), &e))
}

fn ps(root: &Path, id: &str, format: Option<&str>) -> Result<ExitCode> {
    let manager = cgroup_manager(&load(root, id)?)?;
    let mut pids: Vec<i32> = manager
        .get_all_pids()
        .map_err(|e| BuiltinError::runtime(format!("ps {id}"), &e))?
        .iter()
        .map(|p| p.as_raw())
        .collect();
    pids.sort_unstable();
    match format.unwrap_or("table") {
        "json" => {
            let mut out = serde_json::to_vec(&pids).map_err(|e| json_err("ps", &e))?;
            out.push(b'\n');
            print(&out)?;
        }
        "table" => {
            let mut out = String::from("PID\tCMD\n");
            for pid in pids {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                out.push_str(&format!("{pid}\t{}\n", comm.trim_end()));
            }
            print(out.as_bytes())?;
        }
        other => {
            return Err(BuiltinError::Usage(format!(
                "ps {id}: unknown format {other:?} (table or json)"
            )))
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn update(root: &Path, id: &str, resources: Option<&str>) -> Result<ExitCode> {
    let Some(source) = resources else {
        return Err(BuiltinError::Usage(format!(
            "update {id}: the builtin runtime takes the new resources as JSON \
             (--resources FILE, or -r - for stdin); flags such as --memory are not supported"
        )));
    };
    let bytes = if source == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
    } else {
        std::fs::read(source)
    }
    .map_err(|e| BuiltinError::Io {
        what: format!("update {id}: read {source}"),
        source: e,
    })?;
    let resources: LinuxResources = serde_json::from_slice(&bytes).map_err(|e| {
        BuiltinError::Usage(format!("update {id}: {source}: not linux resources: {e}"))
    })?;
    let manager = cgroup_manager(&load(root, id)?)?;
    manager
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| BuiltinError::runtime(format!("update {id}"), &e))?;
    Ok(ExitCode::SUCCESS)
}

/// runc's `state` document: the OCI state plus `created` and `owner`.
fn state_document(c: &Container) -> Value {
    let status = match c.status() {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    };
    let pid = match c.status() {
        ContainerStatus::Stopped => 0,
        _ => c.pid().map_or(0, Pid::as_raw),
    };
    let annotations: Map<String, Value> = c
        .state
        .annotations
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "ociVersion": c.state.oci_version,
        "id": c.id(),
        "pid": pid,
        "status": status,
        "bundle": c.bundle(),
        "created": c.created().map(|t| t.to_rfc3339()),
        "owner": c.creator().map(|o| o.to_string_lossy().into_owned()).unwrap_or_default(),
        "annotations": annotations,
    })
}

/// `linux.resources.memory.disableOOMKiller`, which libcontainer 0.7 never applies (it always
/// passes `false` to its cgroup manager): applied here, with the rest of the container's
/// resources as they are, while the container waits for `start`. cgroup v1 only has the knob.
fn disable_oom_killer(container: &Container, config: &[u8]) -> std::result::Result<(), String> {
    if memchr::memmem::find(config, b"disableOOMKiller").is_none() {
        return Ok(());
    }
    let spec: Spec = serde_json::from_slice(config).map_err(|e| format!("config.json: {e}"))?;
    let Some(resources) = spec.linux().as_ref().and_then(|l| l.resources().clone()) else {
        return Ok(());
    };
    let wanted = resources
        .memory()
        .as_ref()
        .and_then(|m| m.disable_oom_killer())
        .unwrap_or(false);
    if !wanted {
        return Ok(());
    }
    let manager = cgroup_manager(container).map_err(|e| e.to_string())?;
    manager
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: true,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| format!("disable the OOM killer: {}", super::chain(&e)))
}

/// Rewrite the bundle's config.json (atomically) where a mount option needs it (see
/// [`super::mounts`]); most bundles have none, and are only read.
fn adapt_mounts(bundle: &Path, bytes: &[u8]) -> std::result::Result<(), String> {
    let path = bundle.join("config.json");
    if memchr::memmem::find(bytes, b"tmpcopyup").is_none() {
        return Ok(());
    }
    let mut document: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if super::mounts::drop_empty_tmpcopyup(&mut document, bundle)?.is_empty() {
        return Ok(());
    }
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let out = serde_json::to_vec(&document).map_err(|e| e.to_string())?;
    crate::bundle::write_atomic(&path, &meta, &out).map_err(|e| e.to_string())
}

fn absolute(bundle: &Path) -> Result<PathBuf> {
    std::path::absolute(bundle).map_err(|source| BuiltinError::Io {
        what: format!("bundle {}", bundle.display()),
        source,
    })
}

fn print(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|source| BuiltinError::Io {
            what: "write stdout".to_owned(),
            source,
        })
}

fn json_err(what: &str, e: &serde_json::Error) -> BuiltinError {
    BuiltinError::Runtime {
        what: what.to_owned(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_numbers() {
        assert_eq!(parse_user("0"), Some((Some(0), None)));
        assert_eq!(parse_user("1000:100"), Some((Some(1000), Some(100))));
        assert_eq!(parse_user("root"), None);
        assert_eq!(parse_user("1:x"), None);
        assert_eq!(parse_user(""), None);
    }

    #[test]
    fn ids_never_leave_the_root() {
        let root = Path::new("/nonexistent-root");
        for id in ["", ".", "..", "../x", "a/b"] {
            assert!(
                matches!(load(root, id), Err(BuiltinError::Usage(_))),
                "{id:?}"
            );
        }
        assert!(matches!(
            load(root, "c1"),
            Err(BuiltinError::NotFound { .. })
        ));
    }

    #[test]
    fn unsupported_commands_say_so() {
        let inv = crate::argv::parse(&["checkpoint".into(), "c1".into()]).unwrap();
        let err = dispatch(&inv, &Logger::default()).unwrap_err().to_string();
        assert!(
            err.contains("`checkpoint` is not supported by the builtin runtime"),
            "{err}"
        );
        assert!(err.contains("CRIU"), "{err}");
        let inv = crate::argv::parse(&["update".into(), "c1".into()]).unwrap();
        let err = dispatch(&inv, &Logger::default()).unwrap_err().to_string();
        assert!(err.contains("--resources"), "{err}");
    }
}
