//! `[behavior]`: what a running container may do — which programs it may execute, whether a
//! shell may start (at all, or with a socket for its terminal), whether a file written after
//! the container started may be executed, and who may read its secrets — and the pure
//! decision for one exec or open, shared by every enforcer.
//!
//! The rules are written once; the enforcer is whatever the node has (see
//! `ociguard_monitor::guard`): today ociguardd's fanotify guard (exec and open permission
//! events, answered before the kernel lets the operation proceed). What an enforcer cannot
//! hold is reported by [`BehaviorRules::unenforced`], never silently dropped.
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

/// The annotation that carries a container's compiled rules.
pub const ANNOTATION: &str = "org.ociguard.behavior";

/// Shells, by the path a process asks for and the file it resolves to (`*` stays within one
/// path component). With busybox, `/bin/sh` is a link to a multi-call binary: the name asked
/// for is what says "shell".
pub const DEFAULT_SHELLS: &[&str] = &[
    "{/usr,/usr/local,}/{bin,sbin}/{sh,ash,bash,dash,zsh,ksh,ksh93,mksh,lksh,pdksh,fish,csh,tcsh,yash,rbash,hush}",
];

/// What happens when a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Report only.
    Audit,
    /// The operation fails with EPERM.
    #[default]
    Deny,
    /// The operation fails and the process is killed (SIGKILL).
    Kill,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Audit => "audit",
            Action::Deny => "deny",
            Action::Kill => "kill",
        }
    }
}

/// The rules, by the name events and `explain` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    ExecDenied,
    ExecNotAllowed,
    Shell,
    ReverseShell,
    DropExec,
    Secret,
    Environ,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::ExecDenied => "exec-denied",
            Rule::ExecNotAllowed => "exec-not-allowed",
            Rule::Shell => "shell",
            Rule::ReverseShell => "reverse-shell",
            Rule::DropExec => "drop-exec",
            Rule::Secret => "secret",
            Rule::Environ => "environ",
        }
    }
}

/// `[behavior]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviorRules {
    /// `required`: the container does not start unless an enforcer holds these rules;
    /// `if-available`: it starts either way and the decision says why nothing holds them.
    #[serde(default)]
    pub mode: AppArmorMode,
    /// What a match does, unless `kill` names the rule.
    #[serde(default)]
    pub action: Action,
    /// Rules whose match kills the process (`["reverse-shell"]`).
    #[serde(default)]
    pub kill: Vec<Rule>,
    /// Globs of executables the container may not run (by the path asked for or resolved).
    #[serde(default)]
    pub deny_exec: Vec<Spanned<String>>,
    /// If non-empty, the only executables (globs) the container may run.
    #[serde(default)]
    pub allowed_exec: Vec<Spanned<String>>,
    /// Refuse every shell (see [`DEFAULT_SHELLS`], or `shells`).
    #[serde(default)]
    pub deny_shells: bool,
    /// What counts as a shell; default [`DEFAULT_SHELLS`].
    #[serde(default)]
    pub shells: Vec<Spanned<String>>,
    /// Refuse a shell whose stdin, stdout or stderr is a socket, or an interactive shell
    /// (`-i`) without a terminal (a FIFO pipe shell).
    #[serde(default)]
    pub reverse_shell: bool,
    /// Refuse to execute a file that was not part of the image: changed or created after the
    /// container started, or unlinked.
    #[serde(default)]
    pub drop_exec: bool,
    /// Paths inside the container that are secrets in addition to the secret mounts.
    #[serde(default)]
    pub secret_paths: Vec<Spanned<String>>,
    /// Executables (globs) that may read the secrets; with `protect_secrets`, nobody else.
    #[serde(default)]
    pub secret_readers: Vec<Spanned<String>>,
    /// Refuse reads of the secrets by anything but `secret_readers`.
    #[serde(default)]
    pub protect_secrets: bool,
    /// Refuse reading another process's `/proc/PID/environ` or `/proc/PID/mem`.
    #[serde(default)]
    pub environ: bool,
}

impl BehaviorRules {
    /// Is there anything to enforce? (Left out of the canonical bytes when not.)
    pub fn is_off(&self) -> bool {
        self.mode == AppArmorMode::Off
    }

    pub fn action_of(&self, rule: Rule) -> Action {
        if self.kill.contains(&rule) {
            Action::Kill
        } else {
            self.action
        }
    }

    /// Rules this policy asks for that the guard cannot hold, with the reason.
    pub fn unenforced(&self) -> Vec<(Rule, &'static str)> {
        let mut out = Vec::new();
        if self.environ {
            out.push((
                Rule::Environ,
                "procfs refuses fanotify permission events and the kernel refused BPF LSM programs",
            ));
        }
        out
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
    /// Secret paths inside the container (mount destinations and `secret_paths`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_readers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kill: Vec<Rule>,
    pub action: Action,
}

impl Compiled {
    /// `None` when the policy has no `[behavior]`.
    pub fn from_policy(policy: &Policy, digest: &str, spec: &Value) -> Option<Compiled> {
        let b = &policy.behavior;
        if b.is_off() {
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
            audit: policy.mode == Mode::Audit,
            required: b.mode == AppArmorMode::Required && policy.mode == Mode::Enforce,
            deny_exec: strings(&b.deny_exec),
            allowed_exec: strings(&b.allowed_exec),
            shells,
            deny_shells: b.deny_shells,
            reverse_shell: b.reverse_shell,
            drop_exec: b.drop_exec,
            protect_secrets: b.protect_secrets,
            secrets,
            secret_readers: strings(&b.secret_readers),
            kill: b.kill.clone(),
            action: b.action,
        })
    }

    fn action(&self, rule: Rule) -> Action {
        if self.audit {
            Action::Audit
        } else if self.kill.contains(&rule) {
            Action::Kill
        } else {
            self.action
        }
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
            return Some((Rule::ReverseShell, self.action(Rule::ReverseShell)));
        }
        if self.drop_exec && e.not_in_image {
            return Some((Rule::DropExec, self.action(Rule::DropExec)));
        }
        if Self::any(&self.deny_exec, &names) {
            return Some((Rule::ExecDenied, self.action(Rule::ExecDenied)));
        }
        if self.deny_shells && shell {
            return Some((Rule::Shell, self.action(Rule::Shell)));
        }
        if !self.allowed_exec.is_empty() && !Self::any(&self.allowed_exec, &names) {
            return Some((Rule::ExecNotAllowed, self.action(Rule::ExecNotAllowed)));
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
        Some((Rule::Secret, self.action(Rule::Secret)))
    }
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
    fn interactive_flags() {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(interactive(&v(&["sh", "-i"])));
        assert!(interactive(&v(&["bash", "-il"])));
        assert!(!interactive(&v(&["sh", "-c", "echo -i"])));
        assert!(!interactive(&v(&["-i"])));
        assert!(!interactive(&v(&["grep", "--ignore-case"])));
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
