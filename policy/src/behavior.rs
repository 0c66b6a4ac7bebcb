//! `[behavior]`: what a running container may do — which programs it may execute, whether a
//! shell may start (at all, or with a socket for its terminal), whether a file written after
//! the container started may be executed, and who may read its secrets — and the pure
//! decision for one exec or open, shared by every enforcer.
//!
//! The rules are written once; the enforcer is whatever the node has (see
//! `ociguard_monitor::guard` and `ociguard_monitor::bpf`): ociguardd's fanotify guard (exec
//! and open permission events, answered before the kernel lets the operation proceed) and its
//! BPF enforcer (tracepoint programs that kill, pinned so they hold while ociguardd is down).
//! [`Rule::enforcers`] says which can hold what; a rule no enforcer on the node holds is
//! reported, and refuses the container under `required`, never silently dropped.
//!
//! The shim puts the container's [`Compiled`] rules in the `org.ociguard.behavior` annotation
//! of the rewritten `config.json` (never taken from the engine's input: the shim sets or
//! removes it on every create), and ociguardd reads them from there when the createRuntime
//! hook registers the container, i.e. before the container's process runs its entrypoint.

use std::ops::Range;

use glob_match::glob_match;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use toml::Spanned;

use crate::model::{AppArmorMode, Mode, Policy};
// The `[behavior]` and `[profile]` sections are policy-file types, in `model` with the others;
// named here too, where events and enforcers read them.
pub use crate::model::{Action, BehaviorRules, OnAnomaly, ProfileRules, Rule};

/// The annotation that carries a container's compiled rules.
pub const ANNOTATION: &str = "org.ociguard.behavior";

/// Shells, by the path a process asks for and the file it resolves to (`*` stays within one
/// path component). With busybox, `/bin/sh` is a link to a multi-call binary: the name asked
/// for is what says "shell".
pub const DEFAULT_SHELLS: &[&str] = &[
    "{/usr,/usr/local,}/{bin,sbin}/{sh,ash,bash,dash,zsh,ksh,ksh93,mksh,lksh,pdksh,fish,csh,tcsh,yash,rbash,hush}",
];

/// Dynamic loaders by file name. Run as a program (`ld.so /bin/sh`), a loader maps the
/// program itself and no exec of that program happens: under any exec rule, the loader may
/// only be the interpreter the kernel starts for a dynamic executable, never the program asked
/// for.
pub const LOADERS: &[&str] = &[
    "ld-linux-x86-64.so.2",
    "ld-linux.so.2",
    "ld-linux-aarch64.so.1",
    "ld-linux-armhf.so.3",
    "ld-musl-x86_64.so.1",
    "ld-musl-aarch64.so.1",
    "ld64.so.1",
    "ld64.so.2",
    "ld.so",
];

/// Is `path` (by its last component) a dynamic loader?
pub fn is_loader(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    LOADERS.contains(&name)
}

/// Multi-call binaries: the program they run is named by argv[0] (or argv[1] when argv[0]
/// is the binary's own name).
pub const MULTI_CALL: &[&str] = &["busybox", "toybox"];

/// The enforcers a node may have; see `ociguard_monitor::guard` and `ociguard_monitor::bpf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcer {
    /// ociguardd's fanotify permission events: the operation fails with EPERM before it
    /// happens (or the process is killed under `kill`). Holds nothing while ociguardd is down.
    Fanotify,
    /// ociguardd's BPF programs on BTF tracepoints, pinned: they hold while ociguardd is down,
    /// but a tracepoint cannot fail an operation, so every enforced match is a kill.
    Bpf,
}

impl Enforcer {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcer::Fanotify => "fanotify",
            Enforcer::Bpf => "bpf",
        }
    }
}

/// What ociguardd found on this node when it started: `enforcers.json` beside its socket,
/// written atomically by ociguardd and read by `ociguard create` (one small read, no
/// connection) to name in its decision which enforcer holds each rule, and to refuse a
/// `required` rule that none holds. Absent (ociguardd never ran): the registration decides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEnforcers {
    pub enforcers: Vec<Enforcer>,
    /// Why an enforcer is missing (the kernel refused a program, no BTF...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl NodeEnforcers {
    pub const FILE: &'static str = "enforcers.json";

    pub fn path(monitor_socket: &std::path::Path) -> std::path::PathBuf {
        monitor_socket
            .parent()
            .unwrap_or(std::path::Path::new("/"))
            .join(Self::FILE)
    }

    /// `None` when the file is absent, unreadable or not ours.
    pub fn read(monitor_socket: &std::path::Path) -> Option<NodeEnforcers> {
        let (bytes, _) = crate::spec::read_regular(&Self::path(monitor_socket), 64 << 10).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

impl Rule {
    /// Which enforcers can hold this rule, the first the one that answers first.
    pub fn enforcers(self) -> &'static [Enforcer] {
        match self {
            // Names and globs over the whole path, decided by ociguardd.
            Rule::ExecDenied | Rule::ExecNotAllowed | Rule::Secret => &[Enforcer::Fanotify],
            Rule::Shell | Rule::ReverseShell | Rule::DropExec | Rule::Loader => {
                &[Enforcer::Fanotify, Enforcer::Bpf]
            }
            // procfs has no fanotify permission events; ptrace has none at all.
            Rule::Environ => &[Enforcer::Bpf],
        }
    }

    /// Of `available`, the enforcers that hold this rule (empty: nothing on the node can).
    pub fn held_by(self, available: &[Enforcer]) -> Vec<Enforcer> {
        self.enforcers()
            .iter()
            .copied()
            .filter(|e| available.contains(e))
            .collect()
    }
}

/// Check `[behavior]` at load: spans and messages, like `apparmor::validate`.
pub fn validate(policy: &Policy) -> Vec<(Range<usize>, String)> {
    let b = &policy.behavior;
    let mut out = Vec::new();
    let globs = [
        ("deny_exec", &b.deny_exec),
        ("allowed_exec", &b.allowed_exec),
        ("shells", &b.shells),
        ("secret_readers", &b.secret_readers),
    ];
    for (field, list) in globs {
        for g in list {
            if let Err(why) = check_glob(g.get_ref()) {
                out.push((
                    g.span(),
                    format!("behavior.{field} {:?}: {why}", g.get_ref()),
                ));
            }
        }
    }
    for p in &b.secret_paths {
        if let Err(why) = crate::apparmor::check_policy_path(p.get_ref()) {
            out.push((
                p.span(),
                format!("behavior.secret_paths {:?}: {why}", p.get_ref()),
            ));
        }
    }
    if !b.is_off() && b.is_empty() {
        out.push((
            policy.name.span(),
            "behavior.mode is set but no rule is (deny_exec, allowed_exec, deny_shells, reverse_shell, drop_exec, protect_secrets, environ)".to_owned(),
        ));
    }
    out
}

impl BehaviorRules {
    fn is_empty(&self) -> bool {
        self.deny_exec.is_empty()
            && self.allowed_exec.is_empty()
            && !self.deny_shells
            && !self.reverse_shell
            && !self.drop_exec
            && !self.protect_secrets
            && !self.environ
    }
}

/// The alternatives of a glob's `{a,b}` groups, nested or not (`/{usr/,}bin/{sh,ash}` →
/// four globs), at most 4096 of them; other glob syntax is left as it is.
pub fn expand_braces(glob: &str) -> Vec<String> {
    const MAX: usize = 4096;
    let mut out = Vec::new();
    let mut todo = vec![glob.to_owned()];
    while let Some(g) = todo.pop() {
        let Some((open, close)) = first_group(&g) else {
            out.push(g);
            if out.len() >= MAX {
                break;
            }
            continue;
        };
        let (head, body, tail) = (&g[..open], &g[open + 1..close], &g[close + 1..]);
        let mut depth = 0;
        let mut start = 0;
        let mut alts = Vec::new();
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    alts.push(&body[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        alts.push(&body[start..]);
        for alt in alts.into_iter().rev() {
            if todo.len() + out.len() < MAX {
                todo.push(format!("{head}{alt}{tail}"));
            }
        }
    }
    out
}

/// The first `{`...`}` group at depth 0 (byte offsets of both braces).
fn first_group(g: &str) -> Option<(usize, usize)> {
    let open = g.find('{')?;
    let mut depth = 0;
    for (i, c) in g[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((open, open + i));
                }
            }
            _ => {}
        }
    }
    None
}

/// A glob: absolute, printable, no `..` component, at most 1 KiB.
pub fn check_glob(g: &str) -> Result<(), String> {
    if !g.starts_with('/') {
        return Err("is not an absolute path".to_owned());
    }
    if g.len() > 1024 {
        return Err("is longer than 1024 bytes".to_owned());
    }
    if g.chars().any(char::is_control) {
        return Err("has a control character".to_owned());
    }
    if g.split('/').any(|c| c == "..") {
        return Err("has a `..` component".to_owned());
    }
    let (mut braces, mut brackets) = (0i32, 0i32);
    for c in g.chars() {
        match c {
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            _ => {}
        }
        if braces < 0 || brackets < 0 {
            return Err("has an unbalanced `}` or `]`".to_owned());
        }
    }
    if braces != 0 || brackets != 0 {
        return Err("has an unbalanced `{` or `[`".to_owned());
    }
    Ok(())
}

/// What the guard is given for one container: everything resolved, nothing left to the
/// policy files (which may change while the container runs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct Compiled {
    pub policy: String,
    pub policy_digest: String,
    /// `audit` turns every action into a report.
    pub audit: bool,
    pub required: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_exec: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_exec: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shells: Vec<String>,
    pub deny_shells: bool,
    pub reverse_shell: bool,
    pub drop_exec: bool,
    pub protect_secrets: bool,
    /// Another process's environ or memory (`/proc/PID/environ`, `/proc/PID/mem`, ptrace,
    /// process_vm_readv).
    #[serde(default)]
    pub environ: bool,
    /// Secret paths inside the container (mount destinations and `secret_paths`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_readers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kill: Vec<Rule>,
    pub action: Action,
    /// `mode = "learn"`: record what the container does into its profile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub learn: bool,
    /// Compare what it does with its profile.
    #[serde(default, skip_serializing_if = "is_off")]
    pub on_anomaly: OnAnomaly,
}

fn is_off(a: &OnAnomaly) -> bool {
    *a == OnAnomaly::Off
}

impl Compiled {
    /// `None` when the policy has no `[behavior]`, does not learn and has no `[profile]`.
    pub fn from_policy(policy: &Policy, digest: &str, spec: &Value) -> Option<Compiled> {
        let b = &policy.behavior;
        let learn = policy.mode == Mode::Learn;
        if b.is_off() && !learn && policy.profile.is_off() {
            return None;
        }
        let strings = |l: &[Spanned<String>]| -> Vec<String> {
            l.iter().map(|s| s.get_ref().clone()).collect()
        };
        let mut shells = strings(&b.shells);
        if shells.is_empty() {
            shells = DEFAULT_SHELLS.iter().map(|s| (*s).to_owned()).collect();
        }
        let mut secrets: Vec<String> = crate::apparmor::secret_mounts(spec)
            .into_iter()
            .map(|(dest, _)| dest)
            .collect();
        secrets.extend(strings(&b.secret_paths));
        secrets.sort();
        secrets.dedup();
        Some(Compiled {
            policy: policy.name.get_ref().clone(),
            policy_digest: digest.to_owned(),
            audit: !policy.mode.enforces(),
            required: b.mode == AppArmorMode::Required && policy.mode == Mode::Enforce,
            deny_exec: strings(&b.deny_exec),
            allowed_exec: strings(&b.allowed_exec),
            shells,
            deny_shells: b.deny_shells,
            reverse_shell: b.reverse_shell,
            drop_exec: b.drop_exec,
            protect_secrets: b.protect_secrets,
            environ: b.environ,
            secrets,
            secret_readers: strings(&b.secret_readers),
            kill: b.kill.clone(),
            action: b.action,
            learn,
            on_anomaly: policy.profile.on_anomaly,
        })
    }

    /// What a match of `rule` does for this container (`audit` overrides every action).
    pub fn action_of(&self, rule: Rule) -> Action {
        if self.audit {
            Action::Audit
        } else if self.kill.contains(&rule) {
            Action::Kill
        } else {
            self.action
        }
    }

    /// Does ociguardd watch what the container does (to learn its profile, or to compare
    /// with it)?
    pub fn observes(&self) -> bool {
        self.learn || self.on_anomaly != OnAnomaly::Off
    }

    /// Must the guard see opens of the secrets (to refuse, record or compare them)?
    pub fn watches_secrets(&self) -> bool {
        !self.secrets.is_empty() && (self.protect_secrets || self.observes())
    }

    /// Any rule about what may be executed.
    pub fn guards_exec(&self) -> bool {
        self.deny_shells
            || self.reverse_shell
            || !self.deny_exec.is_empty()
            || !self.allowed_exec.is_empty()
    }

    /// The rules these compiled rules turn on, in the order `explain` shows them.
    pub fn rules(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        let mut add = |on: bool, r: Rule| {
            if on {
                out.push(r);
            }
        };
        add(!self.deny_exec.is_empty(), Rule::ExecDenied);
        add(!self.allowed_exec.is_empty(), Rule::ExecNotAllowed);
        add(self.deny_shells, Rule::Shell);
        add(self.reverse_shell, Rule::ReverseShell);
        add(self.drop_exec, Rule::DropExec);
        add(self.protect_secrets, Rule::Secret);
        add(self.environ, Rule::Environ);
        add(self.guards_exec(), Rule::Loader);
        out
    }

    fn any(globs: &[String], paths: &[&str]) -> bool {
        paths
            .iter()
            .any(|p| !p.is_empty() && globs.iter().any(|g| glob_match(g, p)))
    }

    /// The verdict for one exec, or `None` to allow it. Rules in order of what they say
    /// about intent: a reverse shell, then a dropped binary, then the lists.
    pub fn decide_exec(&self, e: &ExecFacts<'_>) -> Option<(Rule, Action)> {
        let names = [e.asked, e.resolved];
        let shell = Self::any(&self.shells, &names);
        if self.reverse_shell && shell && (e.socket_stdio || (e.interactive && !e.stdin_tty)) {
            return Some((Rule::ReverseShell, self.action_of(Rule::ReverseShell)));
        }
        if self.drop_exec && e.not_in_image {
            return Some((Rule::DropExec, self.action_of(Rule::DropExec)));
        }
        if self.guards_exec() && is_loader(e.asked) {
            return Some((Rule::Loader, self.action_of(Rule::Loader)));
        }
        if Self::any(&self.deny_exec, &names) {
            return Some((Rule::ExecDenied, self.action_of(Rule::ExecDenied)));
        }
        if self.deny_shells && shell {
            return Some((Rule::Shell, self.action_of(Rule::Shell)));
        }
        if !self.allowed_exec.is_empty() && !Self::any(&self.allowed_exec, &names) {
            return Some((Rule::ExecNotAllowed, self.action_of(Rule::ExecNotAllowed)));
        }
        None
    }

    /// Is `path` (inside the container) one of its secrets, or below one?
    pub fn is_secret(&self, path: &str) -> bool {
        let alias = path
            .strip_prefix("/var/run/")
            .map(|r| format!("/run/{r}"))
            .or_else(|| path.strip_prefix("/run/").map(|r| format!("/var/run/{r}")));
        let within = |p: &str| {
            self.secrets.iter().any(|s| {
                p == s
                    || (p.starts_with(s.as_str())
                        && (s.ends_with('/') || p.as_bytes().get(s.len()) == Some(&b'/')))
            })
        };
        within(path) || alias.as_deref().is_some_and(within)
    }

    /// The verdict for an open of a secret by the process whose executable is `exe`.
    pub fn decide_secret(&self, exe: &str) -> Option<(Rule, Action)> {
        if !self.protect_secrets || Self::any(&self.secret_readers, &[exe]) {
            return None;
        }
        Some((Rule::Secret, self.action_of(Rule::Secret)))
    }
}

/// The program an exec runs, as rules and profiles name it: the path asked for, or for an
/// applet of a multi-call binary ([`MULTI_CALL`]) `/bin/APPLET`, from `argv[0]` (or `argv[1]`
/// when `argv[0]` names the binary itself: `busybox sh`).
pub fn program_name(asked: &str, resolved: &str, argv: &[String]) -> String {
    let base = |p: &str| -> String { p.rsplit('/').next().unwrap_or(p).to_owned() };
    let multi = |p: &str| MULTI_CALL.contains(&base(p).as_str());
    if multi(asked) || multi(resolved) {
        let applet = match argv.first() {
            Some(a0) if !multi(a0) => Some(a0),
            _ => argv.get(1),
        };
        if let Some(a) = applet.map(|a| base(a)).filter(|a| !a.is_empty()) {
            return format!("/bin/{a}");
        }
    }
    asked.to_owned()
}

/// What the enforcer observed of one exec.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecFacts<'a> {
    /// The path the process passed to execve (after `PATH` search), inside the container.
    pub asked: &'a str,
    /// The file it resolved to, inside the container.
    pub resolved: &'a str,
    pub socket_stdio: bool,
    pub interactive: bool,
    pub stdin_tty: bool,
    /// Changed or created after the container started, or unlinked.
    pub not_in_image: bool,
}

/// Does `argv` (from the second word on) ask for an interactive shell (`-i`, `-il`)?
pub fn interactive(argv: &[String]) -> bool {
    argv.iter()
        .skip(1)
        .any(|a| a.starts_with('-') && !a.starts_with("--") && a.len() <= 8 && a[1..].contains('i'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled() -> Compiled {
        Compiled {
            shells: DEFAULT_SHELLS.iter().map(|s| (*s).to_owned()).collect(),
            reverse_shell: true,
            drop_exec: true,
            deny_exec: vec!["/usr/bin/nc*".to_owned()],
            protect_secrets: true,
            secrets: vec!["/var/run/secrets/kubernetes.io/serviceaccount".to_owned()],
            secret_readers: vec!["/app/reader".to_owned()],
            ..Default::default()
        }
    }

    #[test]
    fn a_shell_is_known_by_the_name_asked_for_not_only_the_binary() {
        let mut c = compiled();
        c.deny_shells = true;
        let busybox_sh = ExecFacts {
            asked: "/bin/sh",
            resolved: "/bin/busybox",
            stdin_tty: true,
            ..Default::default()
        };
        assert_eq!(
            c.decide_exec(&busybox_sh),
            Some((Rule::Shell, Action::Deny))
        );
        let ls = ExecFacts {
            asked: "/bin/ls",
            resolved: "/bin/busybox",
            ..Default::default()
        };
        assert_eq!(c.decide_exec(&ls), None);
        let bash = ExecFacts {
            asked: "/usr/local/bin/x",
            resolved: "/usr/bin/bash",
            ..Default::default()
        };
        assert_eq!(c.decide_exec(&bash), Some((Rule::Shell, Action::Deny)));
    }

    #[test]
    fn reverse_shells_socket_or_interactive_without_a_terminal() {
        let c = compiled();
        let sock = ExecFacts {
            asked: "/bin/sh",
            resolved: "/bin/busybox",
            socket_stdio: true,
            ..Default::default()
        };
        assert_eq!(c.decide_exec(&sock).unwrap().0, Rule::ReverseShell);
        let fifo = ExecFacts {
            asked: "/bin/sh",
            interactive: true,
            ..Default::default()
        };
        assert_eq!(c.decide_exec(&fifo).unwrap().0, Rule::ReverseShell);
        let terminal = ExecFacts {
            interactive: true,
            stdin_tty: true,
            ..fifo
        };
        assert_eq!(c.decide_exec(&terminal), None);
        // A socket on a program that is not a shell: not this rule.
        let nc = ExecFacts {
            asked: "/bin/cat",
            socket_stdio: true,
            ..Default::default()
        };
        assert_eq!(c.decide_exec(&nc), None);
    }

    #[test]
    fn drop_exec_deny_and_allow_lists_audit_and_kill() {
        let mut c = compiled();
        let dropped = ExecFacts {
            asked: "/tmp/apache",
            resolved: "/tmp/apache",
            not_in_image: true,
            ..Default::default()
        };
        assert_eq!(
            c.decide_exec(&dropped),
            Some((Rule::DropExec, Action::Deny))
        );
        let nc = ExecFacts {
            asked: "/usr/bin/nc",
            resolved: "/bin/busybox",
            ..Default::default()
        };
        assert_eq!(c.decide_exec(&nc).unwrap().0, Rule::ExecDenied);
        c.allowed_exec = vec!["/bin/*".to_owned()];
        let other = ExecFacts {
            asked: "/opt/x",
            resolved: "/opt/x",
            ..Default::default()
        };
        assert_eq!(c.decide_exec(&other).unwrap().0, Rule::ExecNotAllowed);
        let allowed = ExecFacts {
            asked: "/bin/ls",
            resolved: "/bin/busybox",
            ..Default::default()
        };
        assert_eq!(c.decide_exec(&allowed), None);
        c.kill = vec![Rule::DropExec];
        assert_eq!(
            c.decide_exec(&dropped),
            Some((Rule::DropExec, Action::Kill))
        );
        c.audit = true;
        assert_eq!(
            c.decide_exec(&dropped),
            Some((Rule::DropExec, Action::Audit))
        );
    }

    #[test]
    fn secrets_below_a_mount_with_run_aliases_and_readers() {
        let c = compiled();
        assert!(c.is_secret("/var/run/secrets/kubernetes.io/serviceaccount/token"));
        assert!(c.is_secret("/run/secrets/kubernetes.io/serviceaccount/..data/token"));
        assert!(!c.is_secret("/var/run/secrets/kubernetes.io/serviceaccountX"));
        assert!(!c.is_secret("/etc/passwd"));
        assert_eq!(c.decide_secret("/bin/busybox").unwrap().0, Rule::Secret);
        assert_eq!(c.decide_secret("/app/reader"), None);
    }

    #[test]
    fn programs_are_named_as_the_guard_decides_on_them() {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            program_name("/bin/ls", "/bin/busybox", &v(&["ls", "-l"])),
            "/bin/ls"
        );
        assert_eq!(
            program_name("/usr/bin/wget", "/bin/busybox", &v(&["wget", "x"])),
            "/bin/wget"
        );
        assert_eq!(
            program_name("/bin/busybox", "/bin/busybox", &v(&["busybox", "sh"])),
            "/bin/sh"
        );
        assert_eq!(
            program_name("/app/server", "/app/server", &v(&["server"])),
            "/app/server"
        );
        assert_eq!(
            program_name("/bin/busybox", "/bin/busybox", &[]),
            "/bin/busybox"
        );
    }

    #[test]
    fn interactive_flags() {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(interactive(&v(&["sh", "-i"])));
        assert!(interactive(&v(&["bash", "-il"])));
        assert!(!interactive(&v(&["sh", "-c", "echo -i"])));
        assert!(!interactive(&v(&["-i"])));
        assert!(!interactive(&v(&["grep", "--ignore-case"])));
    }

    #[test]
    fn braces_expand_in_order_nested_and_empty() {
        assert_eq!(
            expand_braces("/{usr/,}bin/{sh,ash}"),
            vec!["/usr/bin/sh", "/usr/bin/ash", "/bin/sh", "/bin/ash"]
        );
        assert_eq!(
            expand_braces("/a/{b,{c,d}e}"),
            vec!["/a/b", "/a/ce", "/a/de"]
        );
        assert_eq!(expand_braces("/bin/*"), vec!["/bin/*"]);
        let all = expand_braces(DEFAULT_SHELLS[0]);
        assert!(all.contains(&"/usr/local/sbin/hush".to_owned()));
        assert!(all.contains(&"/bin/sh".to_owned()));
        assert_eq!(all.len(), 3 * 2 * 16);
    }

    #[test]
    fn the_loader_is_a_rule_of_its_own_under_exec_rules() {
        let mut c = compiled();
        let ld = ExecFacts {
            asked: "/lib64/ld-linux-x86-64.so.2",
            resolved: "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            ..Default::default()
        };
        assert_eq!(c.decide_exec(&ld), Some((Rule::Loader, Action::Deny)));
        // The kernel opening the interpreter of /bin/dash: asked is the program.
        let interp = ExecFacts {
            asked: "/bin/dash",
            resolved: "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            ..Default::default()
        };
        assert_eq!(c.decide_exec(&interp), None);
        c.deny_exec.clear();
        c.reverse_shell = false;
        assert_eq!(
            c.decide_exec(&ld),
            None,
            "no exec rule: the loader is not one"
        );
    }

    #[test]
    fn rules_are_held_by_the_enforcers_the_node_has() {
        let fan = [Enforcer::Fanotify];
        assert_eq!(Rule::Environ.held_by(&fan), vec![]);
        assert_eq!(
            Rule::Environ.held_by(&[Enforcer::Fanotify, Enforcer::Bpf]),
            vec![Enforcer::Bpf]
        );
        assert_eq!(Rule::Shell.held_by(&fan), vec![Enforcer::Fanotify]);
        assert_eq!(Rule::Secret.held_by(&[Enforcer::Bpf]), vec![]);
    }

    #[test]
    fn globs_are_checked() {
        assert!(check_glob("/bin/{sh,bash}").is_ok());
        assert!(check_glob("bin/sh").is_err());
        assert!(check_glob("/bin/../sh").is_err());
        assert!(check_glob("/bin/{sh").is_err());
        assert!(check_glob("/bin/\nsh").is_err());
    }
}
