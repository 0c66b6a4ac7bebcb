//! The OCI runtime command line (`runc [global flags] <subcommand> [flags] <id> ...`), parsed
//! once into types.
//!
//! Engines (containerd's go-runc, CRI-O and Podman through conmon, Docker through containerd)
//! call ociguard exactly as they would call runc, and the argv is then handed to crun
//! byte-for-byte. This module owns the *interpretation* of that argv: which subcommand, which
//! container id, which bundle, which exec flags. It must never rewrite argv, touch the
//! filesystem, or settle on a reading of an intercepted command (create/run/restore/exec) that
//! crun could read differently: when two readings are possible it returns an error instead of
//! guessing, because policy applied to the wrong bundle or id is no policy at all.
//!
//! # Whose grammar
//! Two grammars meet here. runc parses with Go's `flag` package through urfave/cli: `--x v`,
//! `--x=v`, `-x v`, `-x=v`, single-dash long names (`-root`), no abbreviations, no clusters.
//! crun, which actually runs, parses with glibc argp/`getopt_long` in `ARGP_IN_ORDER` mode:
//! unique abbreviations of long names (`--bund B` is `--bundle B`), attached short values
//! (`-bB`), clusters (`-dt`), and options are read only up to the first positional. The
//! parser follows crun where the two differ and crun would act, accepts runc's forms where crun
//! would simply refuse the token (harmless: the command then fails in crun), and reports an
//! error where both would act differently (`-b=X`: runc reads `X`, crun reads `=X`).
//!
//! # Decisions
//! * **`--help` / `--version` among the global flags** win over any subcommand, as in both
//!   runtimes; the first of them wins, as in crun (which exits as soon as argp meets it).
//!   `--help` among a subcommand's flags makes the command [`Command::Help`]: the runtime prints
//!   help and creates nothing.
//! * **Unknown flags.** `--x=v` carries its value and is skipped. A bare `--x`:
//!   - as the last token, it can only be a switch;
//!   - followed by a plain word in an intercepted subcommand, that word may be its value or the
//!     id: [`ArgvError::AmbiguousFlag`];
//!   - followed by something flag-shaped (or, among global flags, by a plain word) it is read
//!     as a switch, and then the argv is parsed a second time reading it as value-taking. If
//!     that second reading also parses and yields a *different intercepted* command
//!     (`--x foo create ...`, `create --x --no-pivot ID`), it is an
//!     [`ArgvError::AmbiguousFlag`]. Each unknown flag is flipped on its own, not in
//!     combination. Non-intercepted subcommands never fail on unknown flags.
//! * **Flags after the id**: accepted for create/run (runc honours them; crun refuses the
//!   command, so honouring them can never disagree with a container crun creates); refused for
//!   restore ([`ArgvError::FlagAfterId`]), where crun *ignores* a second positional and runc
//!   honours it. exec and ps stop at the id: what follows is the process's argv.
//! * **crun's `--config`/`-f`** on create/run would make crun read a file other than the
//!   bundle's `config.json`, which is the one policy rewrites: [`ArgvError::Unsupported`].
//! * **Ids** must be non-empty, without `/`, and not `.`/`..`, for every subcommand: the id
//!   names state files.
//!
//! Here: the types and [`parse`], which reads the argv a second time for each unknown flag.
//! The option tables of every subcommand are in `options`, one reading of the tokens in `pass`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

mod options;
mod pass;

use pass::Pass;

/// `--log-format`: how runc (and ociguard) write the `--log` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    fn parse(value: &OsStr) -> Result<Self, ArgvError> {
        match value.as_bytes() {
            b"text" => Ok(LogFormat::Text),
            b"json" => Ok(LogFormat::Json),
            _ => Err(ArgvError::UnknownLogFormat {
                value: lossy(value),
            }),
        }
    }
}

/// Flags before the subcommand.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GlobalOpts {
    pub root: Option<PathBuf>,
    /// runc's log file; crun also accepts `journald:ID` / `syslog:ID` here, kept verbatim.
    pub log: Option<PathBuf>,
    pub log_format: LogFormat,
    pub systemd_cgroup: bool,
    pub debug: bool,
    /// runc: `true`, `false` or `auto`; crun ignores it. Kept verbatim.
    pub rootless: Option<String>,
    pub criu: Option<PathBuf>,
    /// crun: `systemd`, `cgroupfs` or `disabled` (Podman passes `disabled`). Kept verbatim.
    pub cgroup_manager: Option<String>,
}

/// `create` and `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateArgs {
    pub id: String,
    /// `.` (the runtime's working directory) unless `--bundle` is given.
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: Option<u32>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    /// `run --detach` only; `create` has no such flag.
    pub detach: bool,
}

impl Default for CreateArgs {
    fn default() -> Self {
        CreateArgs {
            id: String::new(),
            bundle: PathBuf::from("."),
            pid_file: None,
            console_socket: None,
            preserve_fds: None,
            no_pivot: false,
            no_new_keyring: false,
            detach: false,
        }
    }
}

/// `exec`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecArgs {
    pub id: String,
    /// `--process`: a process.json that replaces the flags below.
    pub process: Option<PathBuf>,
    /// Every `--cap`/`-c`, in order.
    pub caps: Vec<String>,
    pub apparmor: Option<String>,
    pub no_new_privs: bool,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub tty: bool,
    /// `--cwd`, every `--env`/`-e` in order, `--user`/`-u` (`UID[:GID]`), every
    /// `--additional-gids`/`-g`, `--preserve-fds`: the process built without `--process`.
    pub cwd: Option<PathBuf>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub additional_gids: Vec<String>,
    pub preserve_fds: Option<u32>,
    /// The process's argv: every token after the id.
    pub args: Vec<OsString>,
    /// Index of the container id in the parsed argv slice (argv without argv[0]). Flags may be
    /// inserted at `subcommand_index + 1`, or here unless a `--` precedes the id (the token
    /// before the id is then `--`, and anything inserted after it is a positional).
    pub id_index: usize,
}

/// `restore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreArgs {
    pub id: String,
    /// `.` unless `--bundle` is given.
    pub bundle: PathBuf,
    pub image_path: Option<PathBuf>,
}

impl Default for RestoreArgs {
    fn default() -> Self {
        RestoreArgs {
            id: String::new(),
            bundle: PathBuf::from("."),
            image_path: None,
        }
    }
}

/// `kill ID [SIGNAL]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KillArgs {
    pub id: String,
    /// As written (`9`, `KILL`, `SIGKILL`); the runtime defaults to SIGTERM.
    pub signal: Option<String>,
    pub all: bool,
}

/// `delete`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteArgs {
    pub id: String,
    pub force: bool,
}

/// Subcommands ociguard only needs the id of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdArgs {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Create(CreateArgs),
    Run(CreateArgs),
    Restore(RestoreArgs),
    Exec(ExecArgs),
    Start(IdArgs),
    State(IdArgs),
    Kill(KillArgs),
    Delete(DeleteArgs),
    Ps {
        id: String,
        format: Option<String>,
    },
    Pause(IdArgs),
    Resume(IdArgs),
    Update {
        id: String,
        /// A path, or `-` for stdin (what containerd and CRI-O pass).
        resources: Option<String>,
    },
    Events(IdArgs),
    Checkpoint(IdArgs),
    Features,
    Spec,
    List,
    Version,
    Help,
    /// A subcommand ociguard does not know: forwarded untouched, not parsed further.
    Other {
        name: String,
    },
}

impl Command {
    /// The subcommand's name as runc spells it.
    pub fn name(&self) -> &str {
        match self {
            Command::Create(_) => "create",
            Command::Run(_) => "run",
            Command::Restore(_) => "restore",
            Command::Exec(_) => "exec",
            Command::Start(_) => "start",
            Command::State(_) => "state",
            Command::Kill(_) => "kill",
            Command::Delete(_) => "delete",
            Command::Ps { .. } => "ps",
            Command::Pause(_) => "pause",
            Command::Resume(_) => "resume",
            Command::Update { .. } => "update",
            Command::Events(_) => "events",
            Command::Checkpoint(_) => "checkpoint",
            Command::Features => "features",
            Command::Spec => "spec",
            Command::List => "list",
            Command::Version => "version",
            Command::Help => "help",
            Command::Other { name } => name,
        }
    }

    /// Whether policy applies: the commands that start a process from a spec.
    pub fn intercepted(&self) -> bool {
        matches!(
            self,
            Command::Create(_) | Command::Run(_) | Command::Restore(_) | Command::Exec(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub global: GlobalOpts,
    pub command: Command,
    /// Index in the parsed slice of the subcommand token. `None` when there is none, or when a
    /// global `--help`/`--version` decided the command before it. For `create --help` it is
    /// the index of `create` although the command is [`Command::Help`].
    pub subcommand_index: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgvError {
    #[error("flag {flag} needs a value")]
    MissingValue { flag: String },
    #[error("`{subcommand}` needs a container id")]
    MissingId { subcommand: String },
    #[error(
        "`{subcommand}`: cannot tell whether flag {flag} takes a value, so the container id, \
         bundle or process is ambiguous; refusing to guess (write {flag}=VALUE if it takes one)"
    )]
    AmbiguousFlag { flag: String, subcommand: String },
    #[error("--log-format: unknown format {value:?} (expected \"text\" or \"json\")")]
    UnknownLogFormat { value: String },
    #[error("{what} (argument {index}) is not valid UTF-8")]
    NotUtf8 { what: String, index: usize },
    #[error("{flag}: bad value {value:?}: {reason}")]
    BadValue {
        flag: String,
        value: String,
        reason: &'static str,
    },
    #[error("`{subcommand}`: unexpected extra argument {arg:?} after the container id")]
    ExtraArgument { subcommand: String, arg: String },
    #[error(
        "`{subcommand}`: flag {flag} after the container id (crun would ignore it, runc would \
         honour it); put flags before the id"
    )]
    FlagAfterId { flag: String, subcommand: String },
    #[error("`{subcommand}`: flag {flag} is not supported: {reason}")]
    Unsupported {
        flag: String,
        subcommand: String,
        reason: &'static str,
    },
}

/// Parse `args` (argv without argv[0]).
pub fn parse(args: &[OsString]) -> Result<Invocation, ArgvError> {
    let (base, guesses) = Pass::run(args, None);
    if matches!(base, Err(ArgvError::AmbiguousFlag { .. })) {
        return base;
    }
    // Every unknown bare flag was read as a switch. Read each one as value-taking instead; if
    // that reading is just as valid and gives crun a different intercepted command, we cannot
    // know which one crun will run.
    for guess in guesses {
        let (alt, _) = Pass::run(args, Some(guess.index));
        let conflict = match (&base, &alt) {
            (_, Err(ArgvError::AmbiguousFlag { subcommand, .. })) => Some(subcommand.clone()),
            (Ok(b), Ok(a)) if a.command.intercepted() && a != b => Some(a.command.name().into()),
            (Err(_), Ok(a)) if a.command.intercepted() => Some(a.command.name().into()),
            _ => None,
        };
        if let Some(name) = conflict {
            return Err(ArgvError::AmbiguousFlag {
                flag: guess.flag,
                subcommand: if guess.subcommand.is_empty() {
                    name
                } else {
                    guess.subcommand.to_owned()
                },
            });
        }
    }
    base
}

fn lossy(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;
    use std::path::Path;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn p(v: &[&str]) -> Result<Invocation, ArgvError> {
        parse(&args(v))
    }

    fn ok(v: &[&str]) -> Invocation {
        match p(v) {
            Ok(inv) => inv,
            Err(e) => panic!("{v:?}: {e}"),
        }
    }

    fn err(v: &[&str]) -> ArgvError {
        match p(v) {
            Ok(inv) => panic!("{v:?} parsed: {inv:?}"),
            Err(e) => e,
        }
    }

    fn create(v: &[&str]) -> CreateArgs {
        match ok(v).command {
            Command::Create(c) => c,
            other => panic!("{v:?}: not create: {other:?}"),
        }
    }

    fn exec(v: &[&str]) -> ExecArgs {
        match ok(v).command {
            Command::Exec(e) => e,
            other => panic!("{v:?}: not exec: {other:?}"),
        }
    }

    fn ambiguous(v: &[&str], flag: &str, subcommand: &str) {
        match err(v) {
            ArgvError::AmbiguousFlag {
                flag: f,
                subcommand: s,
            } => assert_eq!((f.as_str(), s.as_str()), (flag, subcommand), "{v:?}"),
            e => panic!("{v:?}: expected ambiguity, got {e}"),
        }
    }

    const CTD_TASK: &str = "/run/containerd/io.containerd.runtime.v2.task/default/c1";

    fn containerd_global() -> Vec<String> {
        [
            "--root",
            "/run/containerd/runc/default",
            "--log",
            &format!("{CTD_TASK}/log.json"),
            "--log-format",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn with_containerd_global(rest: &[&str]) -> Invocation {
        let mut v = containerd_global();
        v.extend(rest.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        ok(&refs)
    }

    #[test]
    fn containerd_create() {
        let pid = format!("{CTD_TASK}/init.pid");
        let inv =
            with_containerd_global(&["create", "--bundle", CTD_TASK, "--pid-file", &pid, "c1"]);
        assert_eq!(inv.subcommand_index, Some(6));
        assert_eq!(
            inv.global.root.as_deref(),
            Some(Path::new("/run/containerd/runc/default"))
        );
        assert_eq!(
            inv.global.log,
            Some(PathBuf::from(format!("{CTD_TASK}/log.json")))
        );
        assert_eq!(inv.global.log_format, LogFormat::Json);
        assert!(!inv.global.systemd_cgroup);
        assert_eq!(
            inv.command,
            Command::Create(CreateArgs {
                id: "c1".into(),
                bundle: CTD_TASK.into(),
                pid_file: Some(pid.into()),
                ..CreateArgs::default()
            })
        );
        assert!(inv.command.intercepted());
        assert_eq!(inv.command.name(), "create");
    }

    #[test]
    fn containerd_create_variants() {
        let pid = format!("{CTD_TASK}/init.pid");
        let inv = with_containerd_global(&[
            "--systemd-cgroup",
            "create",
            "--bundle",
            CTD_TASK,
            "--pid-file",
            &pid,
            "--console-socket",
            "/tmp/pty.sock",
            "--no-pivot",
            "--no-new-keyring",
            "c1",
        ]);
        assert!(inv.global.systemd_cgroup);
        assert_eq!(inv.subcommand_index, Some(7));
        assert_eq!(
            inv.command,
            Command::Create(CreateArgs {
                id: "c1".into(),
                bundle: CTD_TASK.into(),
                pid_file: Some(pid.clone().into()),
                console_socket: Some("/tmp/pty.sock".into()),
                no_pivot: true,
                no_new_keyring: true,
                ..CreateArgs::default()
            })
        );
        // go-runc adds --preserve-fds when it passes extra files.
        let inv = with_containerd_global(&[
            "create",
            "--bundle",
            CTD_TASK,
            "--pid-file",
            &pid,
            "--preserve-fds",
            "1",
            "c1",
        ]);
        match inv.command {
            Command::Create(c) => assert_eq!(c.preserve_fds, Some(1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn containerd_lifecycle() {
        let inv = with_containerd_global(&["start", "c1"]);
        assert_eq!(inv.command, Command::Start(IdArgs { id: "c1".into() }));
        assert!(!inv.command.intercepted());

        let inv = with_containerd_global(&[
            "exec",
            "--process",
            "/tmp/runc-process123",
            "--console-socket",
            "/tmp/S",
            "--detach",
            "--pid-file",
            "/tmp/P",
            "c1",
        ]);
        assert_eq!(
            inv.command,
            Command::Exec(ExecArgs {
                id: "c1".into(),
                process: Some("/tmp/runc-process123".into()),
                detach: true,
                pid_file: Some("/tmp/P".into()),
                console_socket: Some("/tmp/S".into()),
                id_index: 14,
                ..ExecArgs::default()
            })
        );

        let kill = |rest: &[&str]| with_containerd_global(rest).command;
        assert_eq!(
            kill(&["kill", "c1", "9"]),
            Command::Kill(KillArgs {
                id: "c1".into(),
                signal: Some("9".into()),
                all: false
            })
        );
        assert_eq!(
            kill(&["kill", "--all", "c1", "9"]),
            Command::Kill(KillArgs {
                id: "c1".into(),
                signal: Some("9".into()),
                all: true
            })
        );
        assert_eq!(
            kill(&["delete", "c1"]),
            Command::Delete(DeleteArgs {
                id: "c1".into(),
                force: false
            })
        );
        assert_eq!(
            kill(&["delete", "--force", "c1"]),
            Command::Delete(DeleteArgs {
                id: "c1".into(),
                force: true
            })
        );
        assert_eq!(
            kill(&["state", "c1"]),
            Command::State(IdArgs { id: "c1".into() })
        );
        assert_eq!(
            kill(&["ps", "--format", "json", "c1"]),
            Command::Ps {
                id: "c1".into(),
                format: Some("json".into())
            }
        );
        assert_eq!(
            kill(&["update", "--resources=-", "c1"]),
            Command::Update {
                id: "c1".into(),
                resources: Some("-".into())
            }
        );
        assert_eq!(kill(&["features"]), Command::Features);
        assert_eq!(
            kill(&["events", "--interval=5s", "c1"]),
            Command::Events(IdArgs { id: "c1".into() })
        );
        assert_eq!(
            kill(&["events", "--stats", "c1"]),
            Command::Events(IdArgs { id: "c1".into() })
        );
        assert_eq!(
            kill(&["pause", "c1"]),
            Command::Pause(IdArgs { id: "c1".into() })
        );
        assert_eq!(
            kill(&["resume", "c1"]),
            Command::Resume(IdArgs { id: "c1".into() })
        );
        assert_eq!(
            kill(&[
                "checkpoint",
                "--image-path",
                "/i",
                "--work-path",
                "/w",
                "--leave-running",
                "c1"
            ]),
            Command::Checkpoint(IdArgs { id: "c1".into() })
        );
    }

    #[test]
    fn containerd_restore() {
        // go-runc writes --no-subreaper with a single dash.
        let inv = with_containerd_global(&[
            "restore",
            "--image-path",
            "/ck",
            "--work-path",
            "/w",
            "--detach",
            "--pid-file",
            "/p",
            "--no-pivot",
            "-no-subreaper",
            "--bundle",
            CTD_TASK,
            "c1",
        ]);
        assert_eq!(
            inv.command,
            Command::Restore(RestoreArgs {
                id: "c1".into(),
                bundle: CTD_TASK.into(),
                image_path: Some("/ck".into()),
            })
        );
    }

    #[test]
    fn crio_via_conmon() {
        let inv = ok(&[
            "--systemd-cgroup",
            "--root=/run/runc",
            "create",
            "--bundle",
            "/B",
            "--pid-file",
            "/B/pidfile",
            "--no-pivot",
            "--console-socket",
            "/S",
            "ID",
        ]);
        assert!(inv.global.systemd_cgroup);
        assert_eq!(inv.global.root, Some("/run/runc".into()));
        assert_eq!(inv.subcommand_index, Some(2));
        assert_eq!(
            inv.command,
            Command::Create(CreateArgs {
                id: "ID".into(),
                bundle: "/B".into(),
                pid_file: Some("/B/pidfile".into()),
                console_socket: Some("/S".into()),
                no_pivot: true,
                ..CreateArgs::default()
            })
        );
        assert_eq!(
            ok(&["--root=/run/runc", "kill", "-a", "ID", "15"]).command,
            Command::Kill(KillArgs {
                id: "ID".into(),
                signal: Some("15".into()),
                all: true
            })
        );
        assert_eq!(
            ok(&["update", "--resources", "-", "ID"]).command,
            Command::Update {
                id: "ID".into(),
                resources: Some("-".into())
            }
        );
        // conmon's exec: every flag before the id, --tty when there is a terminal.
        let e = exec(&[
            "--root=/run/runc",
            "exec",
            "--pid-file",
            "/P",
            "--process",
            "/proc.json",
            "--detach",
            "--tty",
            "--console-socket",
            "/S",
            "ID",
        ]);
        assert_eq!(e.id, "ID");
        assert_eq!(e.id_index, 10);
        assert_eq!(e.process, Some("/proc.json".into()));
        assert!(e.detach && e.tty);
        // conmon's restore: note --no-new-keyring, which conmon passes to restore too.
        match ok(&[
            "restore",
            "--bundle",
            "/B",
            "--pid-file",
            "/P",
            "--no-pivot",
            "--no-new-keyring",
            "--detach",
            "--image-path",
            "/ck",
            "--work-path",
            "/B",
            "--tcp-established",
            "--lsm-profile",
            "selinux:x",
            "--console-socket",
            "/S",
            "ID",
        ])
        .command
        {
            Command::Restore(r) => {
                assert_eq!((r.id.as_str(), r.bundle.as_path()), ("ID", Path::new("/B")));
                assert_eq!(r.image_path, Some("/ck".into()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn podman_via_conmon() {
        let inv = ok(&[
            "--log-format=json",
            "--log",
            "/run/libpod/oci-log",
            "--cgroup-manager",
            "disabled",
            "create",
            "--bundle",
            "/B",
            "--pid-file",
            "/P",
            "--preserve-fds",
            "2",
            "--console-socket",
            "/S",
            "ID",
        ]);
        assert_eq!(inv.global.log_format, LogFormat::Json);
        assert_eq!(inv.global.log, Some("/run/libpod/oci-log".into()));
        assert_eq!(inv.global.cgroup_manager.as_deref(), Some("disabled"));
        assert_eq!(inv.subcommand_index, Some(5));
        assert_eq!(
            inv.command,
            Command::Create(CreateArgs {
                id: "ID".into(),
                bundle: "/B".into(),
                pid_file: Some("/P".into()),
                console_socket: Some("/S".into()),
                preserve_fds: Some(2),
                ..CreateArgs::default()
            })
        );
        let inv = ok(&[
            "--cgroup-manager",
            "disabled",
            "create",
            "--bundle",
            "/B",
            "--pid-file",
            "/P",
            "--preserve-fds",
            "2",
            "--console-socket",
            "/S",
            "ID",
        ]);
        assert_eq!(inv.global.log, None);
        assert_eq!(inv.global.log_format, LogFormat::Text);
        assert_eq!(create(&["create", "--bundle", "/B", "ID"]).id, "ID");
    }

    #[test]
    fn bundle_forms() {
        for v in [
            &["create", "-b", "/B", "c1"][..],
            &["create", "--bundle", "/B", "c1"],
            &["create", "--bundle=/B", "c1"],
            &["create", "-b/B", "c1"],
            // getopt_long accepts unique abbreviations, and crun parses with it.
            &["create", "--bund", "/B", "c1"],
            &["create", "--b=/B", "c1"],
            // runc reorders flags given after the id; crun refuses the command.
            &["create", "c1", "--bundle", "/B"],
        ] {
            let c = create(v);
            assert_eq!(
                (c.id.as_str(), c.bundle.as_path()),
                ("c1", Path::new("/B")),
                "{v:?}"
            );
        }
        assert_eq!(create(&["create", "c1"]).bundle, Path::new("."));
        match ok(&["run", "-d", "-b", "/B", "c1"]).command {
            Command::Run(c) => {
                assert!(c.detach);
                assert_eq!(c.bundle, Path::new("/B"));
            }
            other => panic!("{other:?}"),
        }
        // Paths need not be UTF-8.
        let raw = vec![
            OsString::from("create"),
            OsString::from("--bundle"),
            OsString::from_vec(b"/b\xff".to_vec()),
            OsString::from("c1"),
        ];
        match parse(&raw).map(|i| i.command) {
            Ok(Command::Create(c)) => assert_eq!(c.bundle.as_os_str().as_bytes(), b"/b\xff"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn version_and_help() {
        for v in [&["--version"][..], &["-v"], &["-V"], &["-version"]] {
            let inv = ok(v);
            assert_eq!(inv.command, Command::Version, "{v:?}");
            assert_eq!(inv.subcommand_index, None);
            assert!(!inv.command.intercepted());
        }
        for v in [
            &["--help"][..],
            &["-h"],
            &["-?"],
            &["--usage"],
            &[],
            &["help"],
        ] {
            assert_eq!(ok(v).command, Command::Help, "{v:?}");
        }
        assert_eq!(ok(&[]).subcommand_index, None);
        // Global --version beats the subcommand, as in runc and crun; the first of
        // --help/--version wins, as in crun.
        let inv = ok(&[
            "--root",
            "/r",
            "--version",
            "create",
            "--bundle",
            "/B",
            "c1",
        ]);
        assert_eq!(inv.command, Command::Version);
        assert_eq!(inv.global.root, Some("/r".into()));
        assert_eq!(ok(&["--version", "--help"]).command, Command::Version);
        assert_eq!(ok(&["--help", "--version"]).command, Command::Help);
        assert_eq!(
            ok(&["--version=false", "state", "c1"]).command.name(),
            "state"
        );
        // Subcommand help: the runtime prints it and creates nothing.
        let inv = ok(&["create", "--help"]);
        assert_eq!(
            (inv.command, inv.subcommand_index),
            (Command::Help, Some(0))
        );
        assert_eq!(ok(&["exec", "-h"]).command, Command::Help);
        // ...but after exec's id it belongs to the process.
        assert_eq!(exec(&["exec", "c1", "--help"]).id, "c1");
    }

    #[test]
    fn unknown_subcommand_is_forwarded_unparsed() {
        let inv = ok(&["foo", "--x", "y"]);
        assert_eq!(inv.command, Command::Other { name: "foo".into() });
        assert_eq!(inv.subcommand_index, Some(0));
        assert!(!inv.command.intercepted());
        assert_eq!(ok(&["mounts", "add", "c1"]).command.name(), "mounts");
        assert_eq!(ok(&["spec", "--rootless"]).command, Command::Spec);
        assert_eq!(ok(&["list", "--format=json"]).command, Command::List);
        // `--` ends the global flags.
        let inv = ok(&["--debug", "--", "state", "c1"]);
        assert!(inv.global.debug);
        assert_eq!(inv.subcommand_index, Some(2));
        assert_eq!(inv.command, Command::State(IdArgs { id: "c1".into() }));
        assert_eq!(ok(&["--"]).command, Command::Help);
    }

    #[test]
    fn exec_command_after_id_is_not_parsed() {
        let e = exec(&["exec", "c1", "sh", "-c", "ls -l"]);
        assert_eq!((e.id.as_str(), e.id_index), ("c1", 1));
        assert!(!e.tty && !e.detach);
        let e = exec(&["exec", "-t", "c1", "--cap", "CAP_SYS_ADMIN", "-p", "/x"]);
        assert_eq!((e.id.as_str(), e.id_index), ("c1", 2));
        assert!(e.tty);
        assert!(e.caps.is_empty() && e.process.is_none());
        let e = exec(&["exec", "--", "c1", "--tty"]);
        assert_eq!((e.id.as_str(), e.id_index), ("c1", 2));
        assert!(!e.tty);
    }

    #[test]
    fn exec_flags() {
        let e = exec(&[
            "exec",
            "--cap",
            "CAP_SYS_ADMIN",
            "--cap=CAP_NET_RAW",
            "-c",
            "CAP_KILL",
            "-cCAP_CHOWN",
            "--apparmor",
            "unconfined",
            "--no-new-privs",
            "--user",
            "0:0",
            "-e",
            "A=1",
            "--cwd",
            "/",
            "c1",
            "sh",
        ]);
        assert_eq!(
            e.caps,
            ["CAP_SYS_ADMIN", "CAP_NET_RAW", "CAP_KILL", "CAP_CHOWN"]
        );
        assert_eq!(e.apparmor.as_deref(), Some("unconfined"));
        assert!(e.no_new_privs);
        assert_eq!(e.id_index, 16);
        // Clusters as getopt reads them.
        let e = exec(&["exec", "-dt", "c1", "sh"]);
        assert!(e.detach && e.tty);
        // crun's --tty takes an optional attached value: -td is tty="d", not detach.
        let e = exec(&["exec", "-td", "c1", "sh"]);
        assert!(e.tty && !e.detach);
        let e = exec(&["exec", "-tfalse", "c1", "sh"]);
        assert!(!e.tty);
        let e = exec(&["exec", "--tty=false", "c1", "sh"]);
        assert!(!e.tty);
        assert!(matches!(
            err(&["exec", "--tty=0", "c1", "sh"]),
            ArgvError::BadValue { .. }
        ));
        assert!(matches!(err(&["exec"]), ArgvError::MissingId { .. }));
        assert!(matches!(
            err(&["exec", "--process"]),
            ArgvError::MissingValue { .. }
        ));
    }

    #[test]
    fn unknown_flags_on_intercepted_subcommands() {
        // Followed by the id: value or switch? Refuse to guess.
        ambiguous(&["create", "--weird", "ID"], "--weird", "create");
        ambiguous(&["create", "c1", "--weird", "X"], "--weird", "create");
        ambiguous(&["exec", "--weird", "c1", "sh"], "--weird", "exec");
        ambiguous(&["run", "-z", "c1"], "-z", "run");
        // Attached values and trailing switches are unambiguous.
        assert_eq!(create(&["create", "--weird=1", "ID"]).id, "ID");
        assert_eq!(create(&["create", "ID", "--weird"]).id, "ID");
        assert_eq!(create(&["create", "-weird=1", "ID"]).id, "ID");
        // Followed by a flag: a switch, unless reading it as value-taking also parses.
        let c = create(&["create", "--weird", "--pid-file", "p", "ID"]);
        assert_eq!((c.id.as_str(), c.pid_file), ("ID", Some("p".into())));
        ambiguous(
            &["create", "--weird", "--no-pivot", "ID"],
            "--weird",
            "create",
        );
        ambiguous(&["create", "--weird", "--help", "ID"], "--weird", "create");
        ambiguous(
            &["exec", "--weird", "--pid-file", "p", "c1", "sh"],
            "--weird",
            "exec",
        );
        // A prefix of several options, as getopt would also refuse.
        ambiguous(&["create", "--p", "x", "c1"], "--p", "create");
        ambiguous(&["create", "--no", "c1"], "--no", "create");
    }

    #[test]
    fn runc_and_crun_disagree_on_single_dash() {
        // runc: --bundle B; crun: -b "undle", then B is the id.
        ambiguous(&["create", "-bundle", "/B", "c1"], "-bundle", "create");
        // runc: B; crun: "=B".
        ambiguous(&["create", "-b=/B", "c1"], "-b", "create");
        ambiguous(&["exec", "-process", "/p", "c1"], "-process", "exec");
        ambiguous(&["exec", "-t=false", "c1", "sh"], "-t", "exec");
        // A first letter crun does not know: crun refuses the token, runc's reading stands.
        let c = create(&["create", "-pid-file", "/p", "-console-socket=/s", "c1"]);
        assert_eq!(c.pid_file, Some("/p".into()));
        assert_eq!(c.console_socket, Some("/s".into()));
        // An unknown letter inside a cluster: the rest may be its value, or it may take the
        // next token.
        ambiguous(&["run", "-dzq", "c1"], "-z", "run");
        ambiguous(&["run", "-dz", "c1"], "-z", "run");
        // An unknown first letter: runc's reading, an unknown long flag.
        ambiguous(&["run", "-zd", "c1"], "-zd", "run");
    }

    #[test]
    fn unknown_global_flags() {
        assert_eq!(create(&["--x=y", "create", "c1"]).id, "c1");
        assert_eq!(create(&["--x", "create", "c1"]).id, "c1");
        // If --x took a value, --debug would be that value: a different invocation.
        ambiguous(&["--x", "--debug", "create", "c1"], "--x", "create");
        ambiguous(&["--x", "--root=/r", "create", "c1"], "--x", "create");
        // ...but not if that reading leaves no intercepted command.
        assert_eq!(create(&["--x", "--root", "/r", "create", "c1"]).id, "c1");
        ambiguous(&["--x", "foo", "create", "c1"], "--x", "create");
        ambiguous(&["--x", "foo", "exec", "c1", "sh"], "--x", "exec");
        assert_eq!(
            ok(&["--x", "foo", "state", "c1"]).command,
            Command::Other { name: "foo".into() }
        );
        // Abbreviations of several globals.
        ambiguous(&["--lo", "x", "create", "c1"], "--lo", "create");
        assert_eq!(ok(&["--lo", "x", "state", "c1"]).command.name(), "x");
        // Go's single-dash long form.
        let inv = ok(&["-root", "/r", "-debug", "-log-format=json", "create", "c1"]);
        assert_eq!(inv.global.root, Some("/r".into()));
        assert!(inv.global.debug);
        assert_eq!(inv.global.log_format, LogFormat::Json);
    }

    #[test]
    fn global_values() {
        let g = ok(&["--debug=true", "--systemd-cgroup=false", "state", "c1"]).global;
        assert!(g.debug && !g.systemd_cgroup);
        let g = ok(&["--rootless=true", "state", "c1"]).global;
        assert_eq!(g.rootless.as_deref(), Some("true"));
        let g = ok(&[
            "--rootless",
            "auto",
            "--criu",
            "/usr/sbin/criu",
            "state",
            "c1",
        ])
        .global;
        assert_eq!(g.rootless.as_deref(), Some("auto"));
        assert_eq!(g.criu, Some("/usr/sbin/criu".into()));
        let g = ok(&[
            "--log-level",
            "debug",
            "--log-format",
            "text",
            "state",
            "c1",
        ])
        .global;
        assert_eq!(g.log_format, LogFormat::Text);
        assert_eq!(
            err(&["--log-format", "xml", "state", "c1"]),
            ArgvError::UnknownLogFormat {
                value: "xml".into()
            }
        );
        assert!(matches!(
            err(&["--debug=yes", "state", "c1"]),
            ArgvError::BadValue { .. }
        ));
        assert_eq!(
            err(&["--root"]),
            ArgvError::MissingValue {
                flag: "--root".into()
            }
        );
    }

    #[test]
    fn missing_values_ids_and_extra_arguments() {
        assert_eq!(
            err(&["create", "--bundle"]),
            ArgvError::MissingValue {
                flag: "--bundle".into()
            }
        );
        assert_eq!(
            err(&["create", "-b"]),
            ArgvError::MissingValue { flag: "-b".into() }
        );
        assert_eq!(
            err(&["create", "--bundle", "/B"]),
            ArgvError::MissingId {
                subcommand: "create".into()
            }
        );
        assert!(matches!(err(&["start"]), ArgvError::MissingId { .. }));
        assert_eq!(
            err(&["create", "c1", "c2"]),
            ArgvError::ExtraArgument {
                subcommand: "create".into(),
                arg: "c2".into()
            }
        );
        assert!(matches!(
            err(&["restore", "c1", "c2"]),
            ArgvError::ExtraArgument { .. }
        ));
        // Non-intercepted subcommands keep their extra arguments to themselves.
        assert_eq!(ok(&["state", "c1", "c2"]).command.name(), "state");
        assert!(matches!(
            err(&["create", "--preserve-fds", "0x10", "c1"]),
            ArgvError::BadValue { .. }
        ));
        assert!(matches!(
            err(&["create", "--preserve-fds=99999999999", "c1"]),
            ArgvError::BadValue { .. }
        ));
        assert!(matches!(
            err(&["create", "--bundle=", "c1"]),
            ArgvError::BadValue { .. }
        ));
    }

    #[test]
    fn bad_ids() {
        for id in ["../x", "a/b", "..", ".", "", "/abs"] {
            for sub in ["create", "exec", "delete", "state", "kill"] {
                match err(&[sub, "--", id]) {
                    ArgvError::BadValue { flag, value, .. } => {
                        assert_eq!((flag.as_str(), value.as_str()), ("container id", id))
                    }
                    e => panic!("{sub} {id:?}: {e}"),
                }
            }
        }
        let raw = vec![
            OsString::from("create"),
            OsString::from_vec(b"c\xff".to_vec()),
        ];
        assert_eq!(
            parse(&raw),
            Err(ArgvError::NotUtf8 {
                what: "container id".into(),
                index: 1
            })
        );
    }

    #[test]
    fn end_of_options() {
        let c = create(&["create", "--bundle", "/B", "--", "c1"]);
        assert_eq!((c.id.as_str(), c.bundle.as_path()), ("c1", Path::new("/B")));
        // A value may look like a flag; both runtimes take it verbatim.
        assert_eq!(
            create(&["create", "--pid-file", "--x", "c1"]).pid_file,
            Some("--x".into())
        );
        assert!(matches!(
            err(&["create", "--", "c1", "--bundle"]),
            ArgvError::ExtraArgument { .. }
        ));
    }

    #[test]
    fn restore_refuses_flags_after_the_id() {
        // crun stops at the id and ignores a second positional; runc would honour the flag.
        assert_eq!(
            err(&["restore", "c1", "--bundle", "/evil"]),
            ArgvError::FlagAfterId {
                flag: "--bundle".into(),
                subcommand: "restore".into()
            }
        );
        assert!(matches!(
            err(&["restore", "c1", "--help"]),
            ArgvError::FlagAfterId { .. }
        ));
    }

    #[test]
    fn crun_config_override_is_refused() {
        for v in [
            &["create", "--config", "/x.json", "c1"][..],
            &["run", "-f", "/x.json", "c1"],
            &["create", "--conf=/x.json", "c1"],
        ] {
            assert!(matches!(err(v), ArgvError::Unsupported { .. }), "{v:?}");
        }
    }

    #[test]
    fn non_intercepted_never_fail_on_unknown_flags() {
        assert_eq!(
            ok(&["state", "--weird", "c1"]).command,
            Command::State(IdArgs { id: "c1".into() })
        );
        assert_eq!(
            ok(&["kill", "--weird", "c1", "KILL"]).command,
            Command::Kill(KillArgs {
                id: "c1".into(),
                signal: Some("KILL".into()),
                all: false
            })
        );
        assert_eq!(
            ok(&["delete", "c1", "-f"]).command,
            Command::Delete(DeleteArgs {
                id: "c1".into(),
                force: true
            })
        );
        assert_eq!(
            ok(&["ps", "-f", "table", "c1", "-ef"]).command,
            Command::Ps {
                id: "c1".into(),
                format: Some("table".into())
            }
        );
        assert_eq!(
            ok(&["update", "--memory", "10M", "--pids-limit=5", "c1"]).command,
            Command::Update {
                id: "c1".into(),
                resources: None
            }
        );
    }

    #[test]
    fn error_messages_name_the_flag() {
        let e = err(&["create", "--weird", "ID"]).to_string();
        assert!(e.contains("--weird") && e.contains("create"), "{e}");
        let e = err(&["create", "--bundle"]).to_string();
        assert!(e.contains("--bundle"), "{e}");
        let e = err(&["--log-format", "xml", "state", "c1"]).to_string();
        assert!(e.contains("--log-format") && e.contains("xml"), "{e}");
    }
}
