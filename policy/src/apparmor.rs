//! Per-container AppArmor profiles, generated from the chosen policy and the bundle's own mounts.
//!
//! Pure: this module renders profile text and checks strings; compiling and loading it with
//! `apparmor_parser` is the shim's job (`ociguard_shim::apparmor`). Nothing here reads the host.
//!
//! Everything that ends up in a profile is either a fixed string from this file or a path that
//! went through [`Literal`] or [`ExecGlob`]: a literal is always double-quoted with every AARE
//! metacharacter backslash-escaped, so an engine-supplied mount path such as
//! `/run/secrets/my "db" {x}` matches exactly that file; a glob (only `deny_exec`, the one field
//! documented as a glob) is checked against a strict grammar at policy load. Control characters
//! (a newline would end the rule and start a new one) are never accepted anywhere.
//!
//! The profile's name carries a prefix of the digest of its own rules, so two policy versions,
//! or one policy applied to bundles with different secret mounts, never load over each other's
//! profile: AppArmor's replace semantics would otherwise silently re-confine running containers.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::ops::Range;

use serde_json::Value;

use crate::digest::sha256;
use crate::model::{AppArmorRules, Policy};
use crate::set::LoadedPolicy;

/// Every generated profile's name starts with this.
pub const NAME_PREFIX: &str = "ociguard-";
/// Child profile that the policy's `secret_readers` execute into.
pub const READER_PROFILE: &str = "secret_reader";
/// Hex digits of the rules' digest in the profile name.
const NAME_DIGEST_LEN: usize = 12;
/// Longest path accepted (the kernel's PATH_MAX less the terminating NUL).
const MAX_PATH: usize = 4095;
/// Longest path or glob accepted in a policy file.
const MAX_POLICY_PATH: usize = 1024;

/// Mount destinations that are secrets by convention: Docker and Podman secrets, Kubernetes
/// service-account tokens (`/var/run/secrets/kubernetes.io/serviceaccount`).
const SECRET_DIRS: &[&str] = &["/run/secrets", "/var/run/secrets"];
/// Mount sources (host paths) that are secrets: kubelet's secret volumes, and the projected
/// volume kubelet creates for the service-account token (`kube-api-access-<suffix>`). Other
/// projected volumes may hold only ConfigMaps and are not treated as secrets unless listed.
const SECRET_SOURCES: &[&str] = &[
    "/kubernetes.io~secret/",
    "/kubernetes.io~projected/kube-api-access-",
];

/// Characters with a meaning inside an AppArmor quoted path: the quote and the escape itself,
/// AARE globbing (`* ? [ ] { } ^`) and variable expansion (`@{VAR}`).
const AARE_SPECIAL: &[char] = &['\\', '"', '*', '?', '[', ']', '{', '}', '^', '@'];

/// A rendered profile, ready for `apparmor_parser`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// `ociguard-<policy>-<12 hex digits>`, the value for `process.apparmorProfile`.
    pub name: String,
    pub text: String,
    /// `sha256:<hex>` of `text`: the load cache key.
    pub digest: String,
    /// Paths denied as secrets, as written in the profile's rules (before quoting).
    pub secrets: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppArmorError {
    #[error("mount {index} (destination {destination:?}) is a secret mount but its destination {reason}; refusing to start it rather than leave the secret readable")]
    SecretMount {
        index: usize,
        destination: String,
        reason: &'static str,
    },
    #[error("policy {policy:?} apparmor.{field} entry {value:?}: {reason}")]
    PolicyString {
        policy: String,
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("config.json has no process object to set process.apparmorProfile on")]
    NoProcess,
}

/// A path written into a profile as a literal: absolute, normalised, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Literal(String);

impl Literal {
    /// `"..."` with every AARE metacharacter escaped: matches this path and nothing else.
    fn quoted(&self) -> String {
        quote_escaped(&self.0, "")
    }
    /// The path itself or, if it is a directory, anything below it.
    fn quoted_tree(&self) -> String {
        // The suffix is AARE syntax on purpose; it is the only unescaped part.
        quote_escaped(&self.0, "{,/**}")
    }
}

fn quote_escaped(path: &str, glob_suffix: &str) -> String {
    let mut out = String::with_capacity(path.len() + glob_suffix.len() + 4);
    out.push('"');
    for c in path.chars() {
        if AARE_SPECIAL.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out.push_str(glob_suffix);
    out.push('"');
    out
}

/// A `deny_exec` entry that passed [`check_exec_glob`]: quoting it is enough.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExecGlob(String);

impl ExecGlob {
    fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

/// Check a policy path that is not a glob (`allowed_exec`, `secret_readers`, `secret_paths`).
///
/// Stricter than what could be quoted: `"` and `\` have no business in an admin-written path, and
/// a glob character is refused rather than escaped because an admin who wrote `/run/keys/*`
/// meant a glob, and escaping it would silently protect nothing.
pub fn check_policy_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err("must be an absolute path".to_owned());
    }
    if s.len() > MAX_POLICY_PATH {
        return Err(format!("is longer than {MAX_POLICY_PATH} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character".to_owned());
    }
    if s.contains(['"', '\\']) {
        return Err(
            "contains '\"' or '\\', which ociguard does not write into profiles".to_owned(),
        );
    }
    if s.contains(['*', '?', '[', ']', '{', '}']) {
        return Err(
            "is a literal path: glob characters (* ? [ ] { }) are only allowed in deny_exec"
                .to_owned(),
        );
    }
    check_components(s)
}

/// No `//`, `.` or `..` components and no trailing `/`: AppArmor matches the kernel's resolved
/// path, in which none of these occur, so such a rule would never match anything.
fn check_components(s: &str) -> Result<(), String> {
    if s == "/" {
        return Ok(());
    }
    if s.ends_with('/') {
        return Err("must not end with '/'".to_owned());
    }
    if s.contains("//") {
        return Err("must not contain '//'".to_owned());
    }
    if s.split(['/', '{', '}', ',']).any(|c| c == "." || c == "..") {
        return Err("must not contain '.' or '..' components".to_owned());
    }
    Ok(())
}

/// Check a `deny_exec` glob: printable ASCII, AppArmor glob syntax only (`*`, `**`, `?`,
/// `[...]`, `[^...]`, `{a,b}`), no variables (`@{...}`), nothing the parser would reject.
pub fn check_exec_glob(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err("must be an absolute path or glob".to_owned());
    }
    if s.len() > MAX_POLICY_PATH {
        return Err(format!("is longer than {MAX_POLICY_PATH} bytes"));
    }
    if let Some(c) = s.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "contains {c:?}: only printable ASCII is allowed in globs"
        ));
    }
    if s.contains(['"', '\\']) {
        return Err("contains '\"' or '\\'".to_owned());
    }
    if s.contains('@') {
        return Err("contains '@' (AppArmor variables are not supported)".to_owned());
    }
    if s.contains("***") {
        return Err(
            "contains '***' (use '*' within a path segment or '**' across them)".to_owned(),
        );
    }
    // Brackets: one level, non-empty. Braces: balanced, each group with at least one ','.
    let mut in_class = false;
    let mut class_len = 0usize;
    let mut groups: Vec<bool> = Vec::new(); // per open '{': has a ',' been seen at its level
    for c in s.chars() {
        if in_class {
            match c {
                '[' => return Err("nested '[' in a character class".to_owned()),
                ']' if class_len == 0 => return Err("empty character class '[]'".to_owned()),
                ']' => in_class = false,
                '^' if class_len == 0 => {}
                _ => class_len += 1,
            }
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                class_len = 0;
            }
            ']' => return Err("']' without '['".to_owned()),
            '{' => groups.push(false),
            ',' => {
                if let Some(seen) = groups.last_mut() {
                    *seen = true;
                }
            }
            '}' => match groups.pop() {
                Some(true) => {}
                Some(false) => {
                    return Err(
                        "'{...}' needs at least two alternatives, separated by ','".to_owned()
                    )
                }
                None => return Err("'}' without '{'".to_owned()),
            },
            _ => {}
        }
    }
    if in_class || !groups.is_empty() {
        return Err("unclosed '[' or '{'".to_owned());
    }
    check_components(s)
}

/// Load-time checks of `[apparmor]`, as `(span, message)` for [`crate::load::parse_policy`].
pub fn validate(policy: &Policy) -> Vec<(Range<usize>, String)> {
    let rules = &policy.apparmor;
    let mut out = Vec::new();
    let has = |list: &[toml::Spanned<String>], s: &str| list.iter().any(|x| x.get_ref() == s);
    for g in &rules.deny_exec {
        if let Err(why) = check_exec_glob(g.get_ref()) {
            out.push((
                g.span(),
                format!("apparmor.deny_exec {:?}: {why}", g.get_ref()),
            ));
        } else if has(&rules.allowed_exec, g.get_ref()) {
            out.push((
                g.span(),
                format!(
                    "apparmor.deny_exec {:?} is also in allowed_exec",
                    g.get_ref()
                ),
            ));
        }
    }
    for p in &rules.allowed_exec {
        if let Err(why) = check_policy_path(p.get_ref()) {
            out.push((
                p.span(),
                format!("apparmor.allowed_exec {:?}: {why}", p.get_ref()),
            ));
        }
    }
    for p in &rules.secret_paths {
        match check_policy_path(p.get_ref()) {
            Err(why) => out.push((
                p.span(),
                format!("apparmor.secret_paths {:?}: {why}", p.get_ref()),
            )),
            Ok(()) if p.get_ref() == "/" => out.push((
                p.span(),
                "apparmor.secret_paths \"/\" would deny reading the whole filesystem".to_owned(),
            )),
            Ok(()) => {}
        }
    }
    for p in &rules.secret_readers {
        let s = p.get_ref();
        if let Err(why) = check_policy_path(s) {
            out.push((p.span(), format!("apparmor.secret_readers {s:?}: {why}")));
        } else if !rules.allowed_exec.is_empty() && !has(&rules.allowed_exec, s) {
            out.push((
                p.span(),
                format!(
                    "apparmor.secret_readers {s:?} is not in allowed_exec, so it could never run"
                ),
            ));
        } else if has(&rules.deny_exec, s) {
            out.push((
                p.span(),
                format!("apparmor.secret_readers {s:?} is also in deny_exec"),
            ));
        }
    }
    if let (Some(first), true) = (
        rules.secret_readers.first(),
        policy.process.no_new_privileges,
    ) {
        // Readers run in a child profile entered on exec; under no_new_privs the kernel
        // refuses any exec that changes the AppArmor profile (EPERM), so they could never start.
        out.push((
            first.span(),
            "apparmor.secret_readers cannot work with process.no_new_privileges = true: the kernel refuses the profile change a reader needs under no_new_privs".to_owned(),
        ));
    }
    out
}

/// Lexical `.`/`..` resolution, as a path rooted at `/` (used only to classify a mount).
fn lexical(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// An engine-supplied path (untrusted) as a [`Literal`], or why it cannot be one.
fn engine_literal(raw: &str) -> Result<Literal, &'static str> {
    if raw.len() > MAX_PATH {
        return Err("is longer than 4095 bytes");
    }
    if raw.chars().any(char::is_control) {
        return Err("contains a control character (newline, tab, NUL, ...)");
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            // crun resolves '..' after following symlinks in the rootfs, so the directory the
            // mount lands in cannot be known from the string alone.
            ".." => return Err("contains a '..' component"),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err("is the root directory");
    }
    Ok(Literal(format!("/{}", parts.join("/"))))
}

fn is_secret_destination(lexical: &str) -> bool {
    SECRET_DIRS.iter().any(|d| {
        lexical
            .strip_prefix(d)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// `/var/run` is a symlink to `/run` in most images, and AppArmor sees the resolved path: a
/// rule for one spelling alone could miss. Deny both.
fn with_run_aliases(set: &mut BTreeSet<Literal>, lit: Literal) {
    let alias = if let Some(rest) = lit.0.strip_prefix("/var/run/") {
        Some(format!("/run/{rest}"))
    } else {
        lit.0
            .strip_prefix("/run/")
            .map(|rest| format!("/var/run/{rest}"))
    };
    if let Some(a) = alias {
        set.insert(Literal(a));
    }
    set.insert(lit);
}

/// The secret mounts of `spec` (destination, source), as [`secret_literals`] finds them.
pub fn secret_mounts(spec: &Value) -> Vec<(String, String)> {
    let mounts = spec.get("mounts").and_then(Value::as_array);
    mounts
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let destination = m.get("destination").and_then(Value::as_str)?;
            let source = m.get("source").and_then(Value::as_str).unwrap_or_default();
            (is_secret_destination(&lexical(destination))
                || SECRET_SOURCES.iter().any(|s| source.contains(s)))
            .then(|| (lexical(destination), source.to_owned()))
        })
        .collect()
}

/// The paths a container must not read: secret mounts of `spec` plus the policy's
/// `secret_paths`, with their `/run` ↔ `/var/run` aliases, sorted.
fn secret_literals(
    spec: &Value,
    rules: &AppArmorRules,
    policy: &str,
) -> Result<BTreeSet<Literal>, AppArmorError> {
    let mut set = BTreeSet::new();
    let mounts = spec.get("mounts").and_then(Value::as_array);
    for (index, m) in mounts.into_iter().flatten().enumerate() {
        let Some(destination) = m.get("destination").and_then(Value::as_str) else {
            continue;
        };
        let source = m.get("source").and_then(Value::as_str).unwrap_or_default();
        let secret = is_secret_destination(&lexical(destination))
            || SECRET_SOURCES.iter().any(|s| source.contains(s));
        if !secret {
            continue;
        }
        let lit = engine_literal(destination).map_err(|reason| AppArmorError::SecretMount {
            index,
            destination: destination.to_owned(),
            reason,
        })?;
        with_run_aliases(&mut set, lit);
    }
    for p in &rules.secret_paths {
        let s = p.get_ref();
        check_policy_path(s).map_err(|reason| policy_string(policy, "secret_paths", s, reason))?;
        with_run_aliases(&mut set, Literal(s.clone()));
    }
    Ok(set)
}

fn policy_string(policy: &str, field: &'static str, value: &str, reason: String) -> AppArmorError {
    AppArmorError::PolicyString {
        policy: policy.to_owned(),
        field,
        value: value.to_owned(),
        reason,
    }
}

/// The policy's lists, re-checked (a [`LoadedPolicy`] built in code never went through
/// [`validate`]; nothing unchecked is ever written into a profile).
struct Lists {
    deny_exec: Vec<ExecGlob>,
    allowed_exec: Vec<Literal>,
    readers: Vec<Literal>,
}

impl Lists {
    fn from_rules(rules: &AppArmorRules, policy: &str) -> Result<Lists, AppArmorError> {
        let literals = |field: &'static str, list: &[toml::Spanned<String>]| {
            list.iter()
                .map(|p| {
                    let s = p.get_ref();
                    check_policy_path(s)
                        .map(|()| Literal(s.clone()))
                        .map_err(|reason| policy_string(policy, field, s, reason))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let deny_exec = rules
            .deny_exec
            .iter()
            .map(|g| {
                let s = g.get_ref();
                check_exec_glob(s)
                    .map(|()| ExecGlob(s.clone()))
                    .map_err(|reason| policy_string(policy, "deny_exec", s, reason))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Lists {
            deny_exec,
            allowed_exec: literals("allowed_exec", &rules.allowed_exec)?,
            readers: literals("secret_readers", &rules.secret_readers)?,
        })
    }
}

/// Everything a profile is made of, before it has a name.
struct Template<'a> {
    policy: &'a str,
    egress_restricted: bool,
    lists: Lists,
    secrets: BTreeSet<Literal>,
}

/// docker-default's /proc and /sys write restrictions (moby profiles/apparmor/template.go),
/// which leave writable only what a container's own processes and the runtime need:
/// `/proc/<pid>/**`, `/proc/sys/kernel/shm*` and the cgroup filesystem.
const PROC_SYS_RULES: &[&str] = &[
    "deny /proc/* w,",
    "deny /proc/{[^1-9],[^1-9][^0-9],[^1-9s][^0-9y][^0-9s],[^1-9][^0-9][^0-9][^0-9/]*}/** w,",
    "deny /proc/sys/[^k]** w,",
    "deny /proc/sys/kernel/{?,??,[^s][^h][^m]**} w,",
    "deny /proc/sysrq-trigger rwklx,",
    "deny /proc/kcore rwklx,",
    "deny /sys/[^f]*/** wklx,",
    "deny /sys/f[^s]*/** wklx,",
    "deny /sys/fs/[^c]*/** wklx,",
    "deny /sys/fs/c[^g]*/** wklx,",
    "deny /sys/fs/cg[^r]*/** wklx,",
    "deny /sys/firmware/** rwklx,",
    "deny /sys/devices/virtual/powercap/** rwklx,",
    "deny /sys/kernel/security/** rwklx,",
];

impl Template<'_> {
    fn readers_active(&self) -> bool {
        !self.secrets.is_empty() && !self.lists.readers.is_empty()
    }

    fn text(&self, name: &str) -> String {
        let mut t = String::with_capacity(4096);
        // Writing to a String cannot fail; the results are ignored throughout. The policy's
        // digest is deliberately not in the text: the decision log pairs it with the profile's,
        // and a policy edit that leaves the AppArmor rules alone then shares the loaded profile.
        let _ = writeln!(
            t,
            "# Generated by ociguard from policy \"{}\" and the container's mounts.\n\
             # Do not edit: ociguard regenerates it on every create.\n\
             abi <abi/3.0>,\n",
            self.policy
        );
        let _ = writeln!(
            t,
            "profile {name} flags=(attach_disconnected,mediate_deleted) {{"
        );
        self.common(&mut t, "  ", name, &format!("{name}//{READER_PROFILE}"));
        t.push_str("\n  # Executables.\n");
        match self.lists.allowed_exec.is_empty() {
            true => t.push_str("  /{,**} ix,\n"),
            false => {
                for p in &self.lists.allowed_exec {
                    if !(self.readers_active() && self.lists.readers.contains(p)) {
                        let _ = writeln!(t, "  {} ix,", p.quoted());
                    }
                }
            }
        }
        self.deny_exec(&mut t, "  ");
        if !self.secrets.is_empty() {
            t.push_str(
                "\n  # Secrets: unreadable here, and no hard link may give them a readable name.\n",
            );
            for s in &self.secrets {
                let _ = writeln!(t, "  deny {} rwlkmx,", s.quoted_tree());
                let _ = writeln!(t, "  deny link /** -> {},", s.quoted_tree());
            }
        }
        if self.readers_active() {
            t.push_str(
                "\n  # The policy's secret readers run in the child profile below (exact paths\n  # take precedence over the globs above).\n",
            );
            for r in &self.lists.readers {
                let _ = writeln!(t, "  {} cx -> {READER_PROFILE},", r.quoted());
            }
            let _ = writeln!(
                t,
                "\n  profile {READER_PROFILE} flags=(attach_disconnected,mediate_deleted) {{"
            );
            self.common(&mut t, "    ", &format!("{name}//{READER_PROFILE}"), name);
            t.push_str(
                "\n    # Whatever a reader executes returns to the container's profile, without\n    # the secrets.\n",
            );
            match self.lists.allowed_exec.is_empty() {
                true => {
                    let _ = writeln!(t, "    /{{,**}} px -> {name},");
                }
                false => {
                    for p in &self.lists.allowed_exec {
                        if !self.lists.readers.contains(p) {
                            let _ = writeln!(t, "    {} px -> {name},", p.quoted());
                        }
                    }
                }
            }
            for r in &self.lists.readers {
                let _ = writeln!(t, "    {} ix,", r.quoted());
            }
            self.deny_exec(&mut t, "    ");
            t.push_str("  }\n");
        }
        t.push_str("}\n");
        t
    }

    /// Rules shared by the container's profile and the reader profile. `own` is the profile
    /// being written, `sibling` the other one (signals only: neither may ptrace the other, so
    /// the container cannot read a reader's memory or environment).
    fn common(&self, t: &mut String, ind: &str, own: &str, sibling: &str) {
        let _ = writeln!(
            t,
            "{ind}# Base: docker-default, plus no umount or pivot_root and no ptrace beyond itself."
        );
        for rule in [
            "capability,",
            "network,",
            "unix,",
            "deny mount,",
            "deny umount,",
            "deny pivot_root,",
        ] {
            let _ = writeln!(t, "{ind}{rule}");
        }
        // The engine's shim (unconfined) and the runtime, which AppArmor 4 (Ubuntu 24.04) confines
        // in profiles named after it, deliver `kill`/`stop` signals.
        let _ = writeln!(t, "{ind}signal (receive) peer={{unconfined,runc,crun}},");
        let _ = writeln!(t, "{ind}signal (send,receive) peer={own},");
        if self.readers_active() {
            let _ = writeln!(t, "{ind}signal (send,receive) peer={sibling},");
        }
        let _ = writeln!(t, "{ind}ptrace (trace,read,tracedby,readby) peer={own},");
        for rule in PROC_SYS_RULES {
            let _ = writeln!(t, "{ind}{rule}");
        }
        if self.egress_restricted {
            let _ = writeln!(t, "{ind}# Egress is restricted: no raw or packet sockets.");
            let _ = writeln!(t, "{ind}deny network raw,");
            let _ = writeln!(t, "{ind}deny network packet,");
        }
        let _ = writeln!(t, "\n{ind}# Files: all but what is denied here and below.");
        let _ = writeln!(t, "{ind}/{{,**}} rwlkm,");
    }

    fn deny_exec(&self, t: &mut String, ind: &str) {
        for g in &self.lists.deny_exec {
            // m as well as x: `ld.so /bin/sh` maps the binary without exec'ing it.
            let _ = writeln!(t, "{ind}deny {} mx,", g.quoted());
        }
    }
}

/// Render the profile for a container of `spec` (its `config.json`) under `policy`.
/// `egress_restricted`: deny raw and packet sockets.
pub fn render(
    policy: &LoadedPolicy,
    spec: &Value,
    egress_restricted: bool,
) -> Result<Profile, AppArmorError> {
    let rules = &policy.policy.apparmor;
    let template = Template {
        policy: policy.name(),
        egress_restricted,
        lists: Lists::from_rules(rules, policy.name())?,
        secrets: secret_literals(spec, rules, policy.name())?,
    };
    // The name must identify the rules, and the rules mention the name: hash the rules under a
    // placeholder name, then render them under the real one.
    let base = format!("{NAME_PREFIX}{}", policy.name());
    let rules_digest = sha256(template.text(&base).as_bytes());
    let hex = rules_digest
        .strip_prefix("sha256:")
        .unwrap_or(&rules_digest);
    let name = format!("{base}-{}", &hex[..NAME_DIGEST_LEN.min(hex.len())]);
    let text = template.text(&name);
    Ok(Profile {
        digest: sha256(text.as_bytes()),
        name,
        text,
        secrets: template.secrets.into_iter().map(|l| l.0).collect(),
    })
}

/// Set `process.apparmorProfile` to `name`; returns the engine's value it replaced, if different.
pub fn set_profile(spec: &mut Value, name: &str) -> Result<Option<String>, AppArmorError> {
    let process = spec
        .get_mut("process")
        .and_then(Value::as_object_mut)
        .ok_or(AppArmorError::NoProcess)?;
    let previous = process.insert("apparmorProfile".to_owned(), Value::String(name.to_owned()));
    Ok(match previous {
        Some(Value::String(p)) if p != name => Some(p),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_policy;
    use serde_json::json;
    use std::path::Path;

    fn policy(apparmor: &str) -> LoadedPolicy {
        parse_policy(
            Path::new("/p/web.toml"),
            &format!("name = \"web\"\n[match]\nimages = [\"x\"]\n[apparmor]\nmode = \"if-available\"\n{apparmor}"),
        )
        .unwrap()
    }

    fn spec(mounts: Value) -> Value {
        json!({"process": {"args": ["sh"], "cwd": "/"}, "mounts": mounts})
    }

    #[test]
    fn literals_escape_every_aare_metacharacter() {
        let l = Literal("/a b/\"q\"/{x,y}/*?/[z]/^/@{HOME}/back\\".to_owned());
        assert_eq!(
            l.quoted(),
            r#""/a b/\"q\"/\{x,y\}/\*\?/\[z\]/\^/\@\{HOME\}/back\\""#
        );
        assert_eq!(Literal("/s".into()).quoted_tree(), "\"/s{,/**}\"");
    }

    #[test]
    fn engine_paths() {
        assert_eq!(
            engine_literal("//run/./secrets//db/").unwrap().0,
            "/run/secrets/db"
        );
        assert_eq!(engine_literal("run/secrets/x").unwrap().0, "/run/secrets/x");
        assert!(engine_literal("/run/secrets/a\nb").is_err());
        assert!(engine_literal("/run/secrets/a\0b").is_err());
        assert!(engine_literal("/run/secrets/../etc").is_err());
        assert!(engine_literal("/").is_err());
        assert!(engine_literal(&"/a".repeat(3000)).is_err());
        assert_eq!(lexical("/x/../run/./secrets"), "/run/secrets");
        assert!(is_secret_destination("/run/secrets"));
        assert!(is_secret_destination(
            "/var/run/secrets/kubernetes.io/serviceaccount"
        ));
        assert!(!is_secret_destination("/run/secretsx"));
    }

    #[test]
    fn exec_globs() {
        for ok in [
            "/bin/sh",
            "/usr/bin/{ba,da,z,}sh",
            "/usr/bin/*sh",
            "/**/nc",
            "/usr/{bin,sbin}/apt{,-get}",
            "/opt/my tools/x",
            "/usr/bin/[^a]x",
            "/a{b,{c,d}}",
        ] {
            assert_eq!(check_exec_glob(ok), Ok(()), "{ok}");
        }
        for bad in [
            "bin/sh",
            "/bin/sh\n deny x,",
            "/bin/\"sh",
            "/bin/sh\\",
            "/home/@{HOME}",
            "/usr/bin/***",
            "/a{b}",
            "/a{}",
            "/a[]",
            "/a[b",
            "/a]",
            "/a}",
            "/a{b,c",
            "/a[[b]]",
            "/a/../b",
            "/a/./b",
            "/a//b",
            "/a/",
            "/caf\u{e9}",
        ] {
            assert!(check_exec_glob(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn policy_paths() {
        assert_eq!(check_policy_path("/etc/ssl/private key"), Ok(()));
        assert_eq!(check_policy_path("/a@b^c"), Ok(()));
        for bad in [
            "rel", "/a\n", "/a\"", "/a\\", "/a/*", "/a/**", "/a{b,c}", "/a?", "/a/..", "/a/",
        ] {
            assert!(check_policy_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn secrets_come_from_mounts_and_policy() {
        let p = policy("secret_paths = [\"/etc/app/key.pem\"]\n");
        let s = spec(json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/run/secrets/db password", "type": "bind", "source": "/var/lib/x"},
            {"destination": "/var/run/secrets/kubernetes.io/serviceaccount", "type": "bind",
             "source": "/var/lib/kubelet/pods/u/volumes/kubernetes.io~projected/kube-api-access-abc"},
            {"destination": "/etc/tls", "type": "bind",
             "source": "/var/lib/kubelet/pods/u/volumes/kubernetes.io~secret/tls"},
            {"destination": "/etc/config", "type": "bind",
             "source": "/var/lib/kubelet/pods/u/volumes/kubernetes.io~configmap/cfg"},
        ]));
        let prof = render(&p, &s, false).unwrap();
        assert_eq!(
            prof.secrets,
            vec![
                "/etc/app/key.pem",
                "/etc/tls",
                "/run/secrets/db password",
                "/run/secrets/kubernetes.io/serviceaccount",
                "/var/run/secrets/db password",
                "/var/run/secrets/kubernetes.io/serviceaccount",
            ]
        );
        assert!(prof
            .text
            .contains("deny \"/run/secrets/db password{,/**}\" rwlkmx,"));
        assert!(!prof.text.contains("/etc/config"));
    }

    #[test]
    fn hostile_secret_mounts_are_refused_not_written() {
        let p = policy("");
        for dest in [
            "/run/secrets/x\n}\nprofile evil {",
            "/x/../run/secrets/token",
            "/run/secrets/a/../b",
            "/run/secrets/\0",
        ] {
            let err = render(
                &p,
                &spec(json!([{"destination": dest, "source": "/s"}])),
                false,
            )
            .unwrap_err();
            assert!(
                matches!(err, AppArmorError::SecretMount { index: 0, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("refusing"), "{err}");
        }
        // Not a secret (this one lands on /etc/shadow): not ociguard's business.
        assert!(render(
            &p,
            &spec(json!([{"destination": "/run/secrets/../../etc/shadow", "source": "/s"}])),
            false
        )
        .is_ok());
        assert!(render(
            &p,
            &spec(json!([{"destination": "/data/x\ny", "source": "/s"}])),
            false
        )
        .is_ok());
        // A kubelet secret volume is a secret wherever it is mounted.
        let err = render(
            &p,
            &spec(json!([{"destination": "/etc/a\"b\nc", "source": "/v/kubernetes.io~secret/s"}])),
            false,
        )
        .unwrap_err();
        assert!(matches!(err, AppArmorError::SecretMount { .. }), "{err}");
    }

    #[test]
    fn quoting_makes_injection_inert() {
        let p = policy("");
        let dest = "/run/secrets/a\" r,\n  /** ix, #{x} @{HOME} *";
        // The newline makes it a refused path; without it the same string is quoted.
        assert!(render(
            &p,
            &spec(json!([{"destination": dest, "source": "/s"}])),
            false
        )
        .is_err());
        let dest = "/run/secrets/a\" r, /** ix, #{x} @{HOME} *";
        let prof = render(
            &p,
            &spec(json!([{"destination": dest, "source": "/s"}])),
            false,
        )
        .unwrap();
        assert!(
            prof.text.contains(
                r#"deny "/run/secrets/a\" r, /\*\* ix, #\{x\} \@\{HOME\} \*{,/**}" rwlkmx,"#
            ),
            "{}",
            prof.text
        );
    }

    #[test]
    fn names_follow_the_rules() {
        let a = policy("deny_exec = [\"/bin/sh\"]\n");
        let b = policy("deny_exec = [\"/bin/bash\"]\n");
        let none = spec(json!([]));
        let one = spec(json!([{"destination": "/run/secrets/x", "source": "/s"}]));
        let pa = render(&a, &none, false).unwrap();
        assert!(
            pa.name.starts_with("ociguard-web-") && pa.name.len() == 13 + 12,
            "{}",
            pa.name
        );
        assert!(pa.text.contains(&format!("profile {} flags=", pa.name)));
        assert_eq!(render(&a, &none, false).unwrap(), pa, "deterministic");
        let names: BTreeSet<String> = [
            pa.name.clone(),
            render(&b, &none, false).unwrap().name,
            render(&a, &one, false).unwrap().name,
            render(&a, &none, true).unwrap().name,
        ]
        .into_iter()
        .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(pa.digest, sha256(pa.text.as_bytes()));
    }

    #[test]
    fn readers_get_a_child_profile_only_when_there_are_secrets() {
        let p = policy("allowed_exec = [\"/app/server\", \"/usr/bin/vault\"]\nsecret_readers = [\"/usr/bin/vault\"]\n");
        let plain = render(&p, &spec(json!([])), false).unwrap();
        assert!(!plain.text.contains(READER_PROFILE));
        assert!(plain.text.contains("  \"/usr/bin/vault\" ix,"));
        let s = render(
            &p,
            &spec(json!([{"destination": "/run/secrets/x", "source": "/s"}])),
            false,
        )
        .unwrap();
        assert!(s.text.contains("  \"/usr/bin/vault\" cx -> secret_reader,"));
        // Exact duplicate rules with different exec modes would not compile.
        assert!(!s
            .text
            .contains("  \"/usr/bin/vault\" ix,\n  \"/usr/bin/vault\" cx"));
        assert!(s
            .text
            .contains(&format!("    \"/app/server\" px -> {},", s.name)));
        assert!(s.text.contains(&format!(
            "signal (send,receive) peer={}//secret_reader,",
            s.name
        )));
    }

    #[test]
    fn egress_and_exec_rules() {
        let p = policy("deny_exec = [\"/bin/sh\", \"/usr/bin/{nc,ncat}\"]\n");
        let t = render(&p, &spec(json!([])), true).unwrap().text;
        assert!(t.contains("  deny network raw,\n  deny network packet,\n"));
        assert!(t.contains("  deny \"/usr/bin/{nc,ncat}\" mx,\n"));
        assert!(t.contains("  /{,**} ix,\n"));
        let t = render(&p, &spec(json!([])), false).unwrap().text;
        assert!(!t.contains("network raw"));
    }

    #[test]
    fn unvalidated_policies_are_checked_again() {
        let mut p = policy("");
        p.policy.apparmor.deny_exec = vec![toml::Spanned::new(
            0..0,
            "/bin/sh\" x,\n  /** ux".to_owned(),
        )];
        let err = render(&p, &spec(json!([])), false).unwrap_err();
        assert!(
            matches!(
                err,
                AppArmorError::PolicyString {
                    field: "deny_exec",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn set_profile_reports_what_it_replaced() {
        let mut s = json!({"process": {"apparmorProfile": "docker-default"}});
        assert_eq!(
            set_profile(&mut s, "ociguard-x-1").unwrap(),
            Some("docker-default".into())
        );
        assert_eq!(set_profile(&mut s, "ociguard-x-1").unwrap(), None);
        assert_eq!(s["process"]["apparmorProfile"], "ociguard-x-1");
        assert_eq!(
            set_profile(&mut json!({}), "x"),
            Err(AppArmorError::NoProcess)
        );
    }

    #[test]
    fn load_time_validation() {
        let text = |body: &str| format!("name = \"web\"\n[match]\nimages = [\"x\"]\n{body}");
        let errs = |body: &str| match parse_policy(Path::new("/p/web.toml"), &text(body)) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        };
        let e = errs("[apparmor]\ndeny_exec = [\"/bin/sh\", \"/usr/bin/{nc\"]\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("/p/web.toml:5:"), "{e:?}");
        let e = errs("[apparmor]\nsecret_paths = [\"/run/keys/*\"]\n");
        assert!(e[0].contains("only allowed in deny_exec"), "{e:?}");
        let e = errs("[apparmor]\nallowed_exec = [\"/app\"]\nsecret_readers = [\"/bin/vault\"]\n");
        assert!(e[0].contains("not in allowed_exec"), "{e:?}");
        let e = errs(
            "[process]\nno_new_privileges = true\n[apparmor]\nsecret_readers = [\"/bin/vault\"]\n",
        );
        assert!(e[0].contains("no_new_privileges"), "{e:?}");
        let e = errs("[apparmor]\nallowed_exec = [\"/bin/sh\"]\ndeny_exec = [\"/bin/sh\"]\n");
        assert!(e[0].contains("also in allowed_exec"), "{e:?}");
        let e = errs("[apparmor]\nsecret_paths = [\"/\"]\n");
        assert!(e[0].contains("whole filesystem"), "{e:?}");
        let e = errs("[apparmor]\nsecret_paths = [\"/a\\nb\"]\n");
        assert!(e[0].contains("control character"), "{e:?}");
        assert!(errs("[apparmor]\nmode = \"required\"\ndeny_exec = [\"/bin/{ba,da,}sh\"]\nallowed_exec = [\"/app\"]\n").is_empty());
    }
}
