//! Option tables. Each subcommand's table is the union of runc's and crun's flags, so that a
//! flag either runtime knows is never treated as unknown, and abbreviations resolve as crun's
//! getopt_long would (a prefix unique in the union is unique in crun's own subset).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// No value. `--x=true|false` is accepted as Go's flag package does.
    Switch,
    /// crun's `OPTION_ARG_OPTIONAL` (exec `--tty`): a switch, except that in a short cluster
    /// the rest of the token is its value (`-td` is tty="d", not tty+detach).
    OptionalValue,
    /// Takes a value: `--x V`, `--x=V`, `-xV`, `-x V`.
    Value,
}

/// What an option means to ociguard; `Ignored` options are known only so they parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    Root,
    Log,
    LogFormat,
    Criu,
    Rootless,
    CgroupManager,
    SystemdCgroup,
    Debug,
    Version,
    Help,
    Bundle,
    Config,
    PidFile,
    ConsoleSocket,
    PreserveFds,
    NoPivot,
    NoNewKeyring,
    Detach,
    Process,
    Cap,
    Apparmor,
    NoNewPrivs,
    Tty,
    Cwd,
    Env,
    User,
    AdditionalGids,
    ImagePath,
    All,
    Force,
    Format,
    Resources,
    Ignored,
}

#[derive(Debug)]
pub(super) struct Opt {
    /// Empty for short-only aliases.
    pub(super) long: &'static str,
    pub(super) short: Option<u8>,
    pub(super) kind: Kind,
    pub(super) key: Key,
}

impl Opt {
    pub(super) fn display(&self) -> String {
        match (self.long, self.short) {
            ("", Some(c)) => format!("-{}", char::from(c)),
            (long, _) => format!("--{long}"),
        }
    }
}

const fn sw(long: &'static str, short: Option<u8>, key: Key) -> Opt {
    Opt {
        long,
        short,
        kind: Kind::Switch,
        key,
    }
}

const fn val(long: &'static str, short: Option<u8>, key: Key) -> Opt {
    Opt {
        long,
        short,
        kind: Kind::Value,
        key,
    }
}

/// Added to every argp parser by glibc (`-?`, `--usage`, hidden `--program-name` and
/// `--HANG[=SECS]`), plus urfave/cli's `-h`.
pub(super) const ARGP_DEFAULTS: &[Opt] = &[
    sw("help", Some(b'?'), Key::Help),
    sw("", Some(b'h'), Key::Help),
    sw("usage", None, Key::Help),
    val("program-name", None, Key::Ignored),
    Opt {
        long: "HANG",
        short: None,
        kind: Kind::OptionalValue,
        key: Key::Ignored,
    },
];

pub(super) const GLOBAL: &[Opt] = &[
    val("root", None, Key::Root),
    val("log", None, Key::Log),
    val("log-format", None, Key::LogFormat),
    val("log-level", None, Key::Ignored),
    val("criu", None, Key::Criu),
    val("rootless", None, Key::Rootless),
    val("cgroup-manager", None, Key::CgroupManager),
    sw("systemd-cgroup", None, Key::SystemdCgroup),
    sw("debug", None, Key::Debug),
    sw("version", Some(b'v'), Key::Version),
    sw("", Some(b'V'), Key::Version),
];

pub(super) const CREATE: &[Opt] = &[
    val("bundle", Some(b'b'), Key::Bundle),
    val("config", Some(b'f'), Key::Config),
    val("console-socket", None, Key::ConsoleSocket),
    val("pid-file", None, Key::PidFile),
    val("preserve-fds", None, Key::PreserveFds),
    val("pidfd-socket", None, Key::Ignored),
    sw("no-pivot", None, Key::NoPivot),
    sw("no-new-keyring", None, Key::NoNewKeyring),
    sw("no-subreaper", None, Key::Ignored),
];

pub(super) const RUN_EXTRA: &[Opt] = &[
    sw("detach", Some(b'd'), Key::Detach),
    sw("keep", None, Key::Ignored),
];

pub(super) const EXEC: &[Opt] = &[
    val("process", Some(b'p'), Key::Process),
    val("console-socket", None, Key::ConsoleSocket),
    val("pidfd-socket", None, Key::Ignored),
    val("pid-file", None, Key::PidFile),
    val("cwd", None, Key::Cwd),
    val("env", Some(b'e'), Key::Env),
    val("user", Some(b'u'), Key::User),
    val("additional-gids", Some(b'g'), Key::AdditionalGids),
    val("cap", Some(b'c'), Key::Cap),
    val("apparmor", None, Key::Apparmor),
    val("process-label", None, Key::Ignored),
    val("preserve-fds", None, Key::PreserveFds),
    val("cgroup", None, Key::Ignored),
    sw("detach", Some(b'd'), Key::Detach),
    Opt {
        long: "tty",
        short: Some(b't'),
        kind: Kind::OptionalValue,
        key: Key::Tty,
    },
    sw("no-new-privs", None, Key::NoNewPrivs),
    sw("ignore-paused", None, Key::Ignored),
    sw("no-subreaper", None, Key::Ignored),
];

pub(super) const RESTORE: &[Opt] = &[
    val("bundle", Some(b'b'), Key::Bundle),
    val("image-path", None, Key::ImagePath),
    val("work-path", None, Key::Ignored),
    val("console-socket", None, Key::Ignored),
    val("pid-file", None, Key::Ignored),
    val("manage-cgroups-mode", None, Key::Ignored),
    val("empty-ns", None, Key::Ignored),
    val("lsm-profile", None, Key::Ignored),
    val("lsm-mount-context", None, Key::Ignored),
    // crun declares it without an argument but reads the next token anyway.
    val("network-lock", None, Key::Ignored),
    sw("tcp-established", None, Key::Ignored),
    sw("tcp-close", None, Key::Ignored),
    sw("ext-unix-sk", None, Key::Ignored),
    sw("shell-job", None, Key::Ignored),
    sw("file-locks", None, Key::Ignored),
    sw("detach", Some(b'd'), Key::Ignored),
    sw("no-subreaper", None, Key::Ignored),
    sw("no-pivot", None, Key::Ignored),
    // conmon passes it to restore as well as create.
    sw("no-new-keyring", None, Key::Ignored),
    sw("auto-dedup", None, Key::Ignored),
    sw("lazy-pages", None, Key::Ignored),
];

pub(super) const CHECKPOINT: &[Opt] = &[
    val("image-path", None, Key::Ignored),
    val("work-path", None, Key::Ignored),
    val("parent-path", None, Key::Ignored),
    val("page-server", None, Key::Ignored),
    val("status-fd", None, Key::Ignored),
    val("manage-cgroups-mode", None, Key::Ignored),
    val("empty-ns", None, Key::Ignored),
    val("network-lock", None, Key::Ignored),
    sw("leave-running", None, Key::Ignored),
    sw("tcp-established", None, Key::Ignored),
    sw("tcp-skip-in-flight", None, Key::Ignored),
    sw("tcp-close", None, Key::Ignored),
    sw("link-remap", None, Key::Ignored),
    sw("ext-unix-sk", None, Key::Ignored),
    sw("shell-job", None, Key::Ignored),
    sw("lazy-pages", None, Key::Ignored),
    sw("file-locks", None, Key::Ignored),
    sw("pre-dump", None, Key::Ignored),
    sw("auto-dedup", None, Key::Ignored),
];

pub(super) const KILL: &[Opt] = &[sw("all", Some(b'a'), Key::All)];
pub(super) const DELETE: &[Opt] = &[sw("force", Some(b'f'), Key::Force)];
pub(super) const PS: &[Opt] = &[val("format", Some(b'f'), Key::Format)];
pub(super) const EVENTS: &[Opt] = &[
    val("interval", None, Key::Ignored),
    sw("stats", None, Key::Ignored),
];
pub(super) const UPDATE: &[Opt] = &[
    val("resources", Some(b'r'), Key::Resources),
    val("blkio-weight", None, Key::Ignored),
    val("cpu-period", None, Key::Ignored),
    val("cpu-quota", None, Key::Ignored),
    // runc and crun spell it `--cpu-share`; some docs say `--cpu-shares`.
    val("cpu-share", None, Key::Ignored),
    val("cpu-shares", None, Key::Ignored),
    val("cpu-rt-period", None, Key::Ignored),
    val("cpu-rt-runtime", None, Key::Ignored),
    val("cpu-idle", None, Key::Ignored),
    val("cpu-burst", None, Key::Ignored),
    val("cpuset-cpus", None, Key::Ignored),
    val("cpuset-mems", None, Key::Ignored),
    val("kernel-memory", None, Key::Ignored),
    val("kernel-memory-tcp", None, Key::Ignored),
    val("memory", None, Key::Ignored),
    val("memory-reservation", None, Key::Ignored),
    val("memory-swap", None, Key::Ignored),
    val("pids-limit", None, Key::Ignored),
    val("l3-cache-schema", None, Key::Ignored),
    val("mem-bw-schema", None, Key::Ignored),
];

/// The option tables one parser consults (besides [`ARGP_DEFAULTS`]).
pub(super) type Tables = &'static [&'static [Opt]];
