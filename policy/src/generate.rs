//! A least-privilege policy from learned behaviour profiles (`ociguardctl policy generate`).
//!
//! The policy allows exactly what the profiles recorded: the programs (`allowed_exec`), the
//! programs that read each secret (`secret_readers`), the destinations (`[egress]` allowlist),
//! and refuses the rest: shells unless one was run, reverse shells, binaries dropped after start
//! unless the workload ran one, another process's environ, loaders. `[profile] on_anomaly =
//! "report"` keeps comparing the containers with their profile. Comments say what the profile
//! covers (containers, time span, policies) and what it could not record.
//!
//! Pure: text in, text out; `ociguardctl` checks the result with the policy loader before it
//! writes it.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::Write as _;

use glob_match::glob_match;

use crate::behavior::{Enforcer, Rule, DEFAULT_SHELLS};
use crate::profile::{protocol_name, Profile};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("no profile to generate from")]
    Empty,
    #[error("policy name {0:?}: use letters, digits, '-', '_' and '.' (at most 63)")]
    Name(String),
    #[error("the profiles name no image: a policy from them would select every container")]
    NoImage,
}

/// Inputs besides the profiles.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    pub name: &'a str,
    /// Unix seconds, for the header.
    pub now: u64,
    /// The enforcers of the node the policy is for (`enforcers.json`), when known: a rule
    /// none of them holds is written commented out, so the `required` policy can start.
    pub enforcers: Option<&'a [Enforcer]>,
}

/// Recorded text (image names, program and secret paths: a container under a `learn` policy
/// chooses them) made fit for a TOML comment. A newline in it would end the comment and turn the
/// rest of the text into policy lines, and TOML allows no other control character in a comment:
/// each is written escaped (`\u{a}`) instead.
fn c(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|ch| {
                if ch.is_control() {
                    ch.escape_unicode().to_string()
                } else {
                    ch.to_string()
                }
            })
            .collect(),
    )
}

/// Whether a recorded program path can be written into `allowed_exec`/`secret_readers` as
/// itself. Those lists hold globs: a program a container named `/tmp/*` must not become a rule
/// allowing every program in `/tmp`, and one the loader refuses (a control character, an
/// unbalanced `[`) must not make the whole generated policy unloadable. Such programs are left
/// out, so they stay refused.
fn literal_path(s: &str) -> bool {
    crate::behavior::check_glob(s).is_ok() && !s.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// An image name as a `[match] images` glob matching exactly that name: glob syntax in it is
/// escaped (an image named `*`, or `!x`, must not select every image).
fn glob_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '{' | '}' | '\\' | '!') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// A comment naming the recorded paths that [`literal_path`] kept out of a list.
fn left_out(t: &mut String, what: &str, paths: &[&String]) {
    if !paths.is_empty() {
        let names: Vec<&str> = paths.iter().map(|p| p.as_str()).collect();
        let _ = writeln!(
            t,
            "# {} {what} with names a policy cannot hold as a literal path are left out (NOT allowed): {}",
            paths.len(),
            c(&names.join(", "))
        );
    }
}

/// A TOML string literal (quoted and escaped as TOML requires).
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        return "[]".to_owned();
    }
    let mut out = String::from("[\n");
    for i in items {
        let _ = writeln!(out, "  {},", q(i));
    }
    out.push(']');
    out
}

/// `2026-12-07T05:10:00Z`
pub fn utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm), for 1970..9999.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `3 d 4 h`, `12 min`, `40 s`
pub fn span(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A name for the policy of `p` when none is given: `learned-<image repo base>`.
pub fn default_name(p: &Profile) -> String {
    let img = p
        .subject
        .image
        .as_deref()
        .or(p.subject.digest.as_deref())
        .unwrap_or("image");
    let repo = img.split('@').next().unwrap_or(img);
    let base = repo.rsplit('/').next().unwrap_or(repo);
    let base = base.split(':').next().unwrap_or(base);
    let clean: String = base
        .chars()
        // Policy names are lowercase (the loader's rule).
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("learned-{clean}")
}

/// The policy text for `profiles` (all of one service identity or image; merged).
pub fn policy(profiles: &[Profile], opts: &Options<'_>) -> Result<String, GenerateError> {
    let (first, rest) = profiles.split_first().ok_or(GenerateError::Empty)?;
    if !valid_name(opts.name) {
        return Err(GenerateError::Name(opts.name.to_owned()));
    }
    let mut p = first.clone();
    for o in rest {
        p.merge(o);
    }
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Generated by `ociguardctl policy generate` on {} from {} behaviour profile(s):",
        utc(opts.now),
        profiles.len()
    );
    for s in profiles {
        let _ = writeln!(
            t,
            "#   {}  image {}  digest {}  identity {}",
            c(&s.subject.id()),
            c(s.subject.image.as_deref().unwrap_or("-")),
            c(s.subject.digest.as_deref().unwrap_or("-")),
            c(&s.subject.identity)
        );
    }
    let _ = writeln!(
        t,
        "# learned from {} container(s) between {} and {} ({}) under policy {}.",
        p.containers,
        utc(p.first_seen),
        utc(p.last_seen),
        span(p.last_seen.saturating_sub(p.first_seen)),
        c(&p.policies
            .iter()
            .map(|s| q(s))
            .collect::<Vec<_>>()
            .join(", "))
    );
    t.push_str(
        "# It allows exactly what was observed. Review it, `ociguardctl policy check` it, and\n\
         # run it in `mode = \"audit\"` first if the profile may not cover every code path.\n",
    );
    let _ = writeln!(t, "name = {}", q(opts.name));
    t.push_str("mode = \"enforce\"\n\n[match]\n");
    let images: BTreeSet<String> = profiles
        .iter()
        .filter_map(|s| s.subject.image.as_deref().or(s.subject.digest.as_deref()))
        .map(glob_literal)
        .collect();
    // ociguardd records no profile without an image, but a profile file is read back: an
    // empty `images` would make the policy select every container (the loader refuses it).
    if images.is_empty() {
        return Err(GenerateError::NoImage);
    }
    let images: Vec<String> = images.into_iter().collect();
    let _ = writeln!(t, "images = {}", list(&images));
    let digests: BTreeSet<&str> = profiles
        .iter()
        .filter_map(|s| s.subject.digest.as_deref())
        .collect();
    if !digests.is_empty() {
        let _ = writeln!(
            t,
            "# image digest(s) {}: add `digests = [...]` to pin them where the engine reports digests",
            c(&digests.into_iter().collect::<Vec<_>>().join(", "))
        );
    }
    let sas: BTreeSet<(&str, &str)> = profiles
        .iter()
        .filter_map(|s| s.subject.identity.strip_prefix("serviceaccount:"))
        .filter_map(|sa| sa.split_once('/'))
        // An empty part (only in a profile file not written by ociguardd) is an empty glob,
        // which the loader refuses.
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .collect();
    if !sas.is_empty() {
        let nss: BTreeSet<String> = sas.iter().map(|(ns, _)| (*ns).to_owned()).collect();
        let names: BTreeSet<String> = sas.iter().map(|(_, n)| (*n).to_owned()).collect();
        let _ = writeln!(
            t,
            "kubernetes_namespaces = {}",
            list(&nss.into_iter().collect::<Vec<_>>())
        );
        let _ = writeln!(
            t,
            "service_accounts = {}",
            list(&names.into_iter().collect::<Vec<_>>())
        );
    }

    // [behavior]
    t.push_str("\n[behavior]\nmode = \"required\"\n");
    let (programs, odd): (Vec<&String>, Vec<&String>) =
        p.execs.keys().partition(|k| literal_path(k));
    let programs: Vec<String> = programs.into_iter().cloned().collect();
    let _ = writeln!(
        t,
        "# {} program(s) observed{}",
        programs.len(),
        if p.dropped.execs > 0 {
            format!(
                "; {} more did not fit in the profile (at most {}) and are NOT allowed",
                p.dropped.execs,
                crate::profile::MAX_EXECS
            )
        } else {
            String::new()
        }
    );
    left_out(&mut t, "program(s)", &odd);
    if programs.is_empty() {
        t.push_str("# (none: every exec is refused)\ndeny_exec = [\"/**\"]\n");
    } else {
        let _ = writeln!(t, "allowed_exec = {}", list(&programs));
    }
    let shells: Vec<&String> = programs
        .iter()
        .filter(|prog| {
            DEFAULT_SHELLS
                .iter()
                .flat_map(|g| crate::behavior::expand_braces(g))
                .any(|g| glob_match(&g, prog))
        })
        .collect();
    if shells.is_empty() {
        t.push_str("deny_shells = true\n");
    } else {
        let _ = writeln!(
            t,
            "# shells were run ({}): deny_shells is left off, allowed_exec still lists them",
            c(&shells
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "))
        );
    }
    t.push_str("reverse_shell = true\n");
    let dropped: Vec<&String> = p
        .execs
        .iter()
        .filter(|(_, e)| e.not_in_image)
        .map(|(k, _)| k)
        .collect();
    if dropped.is_empty() {
        t.push_str("drop_exec = true\n");
    } else {
        let _ = writeln!(
            t,
            "# the workload ran files written after it started ({}): drop_exec is left off",
            c(&dropped
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "))
        );
    }
    match opts.enforcers {
        Some(have) if Rule::Environ.held_by(have).is_empty() => t.push_str(
            "# environ = true  (no enforcer on this node holds it: ociguardd runs without the BPF enforcer)\n",
        ),
        _ => t.push_str("environ = true\n"),
    }
    t.push_str("protect_secrets = true\n");
    let (readers, odd): (BTreeSet<&String>, BTreeSet<&String>) =
        p.secrets.values().flatten().partition(|r| literal_path(r));
    let readers: BTreeSet<String> = readers.into_iter().cloned().collect();
    left_out(
        &mut t,
        "secret reader(s)",
        &odd.into_iter().collect::<Vec<_>>(),
    );
    let _ = writeln!(
        t,
        "# secret reads observed: {}",
        c(&if p.secrets.is_empty() {
            "none (no program may read the secrets)".to_owned()
        } else {
            p.secrets
                .iter()
                .map(|(path, r)| {
                    format!(
                        "{path} by {}",
                        r.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
    );
    if p.dropped.secrets > 0 {
        let _ = writeln!(
            t,
            "# {} secret read(s) did not fit in the profile and are not allowed",
            p.dropped.secrets
        );
    }
    let _ = writeln!(
        t,
        "secret_readers = {}",
        list(&readers.into_iter().collect::<Vec<_>>())
    );

    t.push_str("\n[profile]\non_anomaly = \"report\"\n");

    // [egress]
    t.push_str("\n[egress]\nmode = \"allowlist\"\n");
    let _ = writeln!(
        t,
        "# {} destination(s) observed{}",
        p.destinations_seen,
        match p.summarised_to() {
            Some((v4, v6)) => format!(
                ", summarised to /{v4} (IPv4) and /{v6} (IPv6) networks{} to stay within {} entries",
                if p.ports_summarised {
                    " on any port"
                } else {
                    ""
                },
                crate::profile::MAX_DESTINATIONS
            ),
            None => String::new(),
        }
    );
    if p.egress.is_empty() {
        t.push_str("# (none: the container may only use loopback)\n");
    }
    for d in &p.egress {
        // ociguardd stores networks without host bits, but a profile file is read back: the
        // loader refuses `198.18.1.2/24`.
        let net = d.net.trunc();
        let net = if net.prefix_len() == net.max_prefix_len() {
            net.addr().to_string()
        } else {
            net.to_string()
        };
        t.push_str("\n[[egress.allow]]\n");
        let _ = writeln!(t, "cidr = {}", q(&net));
        match (d.protocol, d.port) {
            (6 | 17, port) => {
                let _ = writeln!(t, "protocol = {}", q(&protocol_name(d.protocol)));
                if let Some(port) = port {
                    let _ = writeln!(t, "ports = [{port}]");
                }
            }
            // The allowlist names TCP and UDP only; any other protocol to this
            // destination needs the protocol-less entry.
            (other, _) => {
                let _ = writeln!(
                    t,
                    "# {} (the allowlist allows every protocol to it)",
                    protocol_name(other)
                );
            }
        }
    }
    t.push_str(
        "\n# seccomp: syscalls are not recorded on this node (no per-syscall audit stream is\n\
         # available to ociguardd), so the default profile applies unchanged.\n",
    );
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Subject;

    fn profile() -> Profile {
        let s = Subject::of(Some("localhost/app:1"), Some("sha256:abc"), None, None).unwrap();
        let mut p = Profile::new(s, 1_765_000_000);
        p.add_container("learn-app", 1_765_000_000);
        p.add_exec("/bin/server", "", false, 1_765_000_001);
        p.add_exec("/bin/ls", "/bin/busybox", false, 1_765_000_002);
        p.add_secret("/run/secrets/token", "/bin/server", 1_765_000_003);
        p.add_destination(6, "198.18.1.1".parse().unwrap(), Some(443), 1_765_000_100);
        p.add_destination(1, "198.18.1.2".parse().unwrap(), None, 1_765_000_100);
        p
    }

    #[test]
    fn generated_policy_loads_and_allows_what_was_seen() {
        let text = policy(
            &[profile()],
            &Options {
                name: "learned-app",
                now: 1_765_000_200,
                enforcers: None,
            },
        )
        .unwrap();
        let loaded = crate::load::parse_policy(std::path::Path::new("gen.toml"), &text)
            .unwrap_or_else(|e| panic!("{text}\n{e:?}"));
        let pol = &loaded.policy;
        assert_eq!(pol.mode, crate::Mode::Enforce);
        let allowed: Vec<&str> = pol
            .behavior
            .allowed_exec
            .iter()
            .map(|s| s.get_ref().as_str())
            .collect();
        assert_eq!(allowed, ["/bin/ls", "/bin/server"]);
        assert!(pol.behavior.deny_shells && pol.behavior.drop_exec && pol.behavior.environ);
        assert_eq!(pol.egress.allow.len(), 2);
        // Found by fuzzing (fuzz/regressions/profile_decode/): a stored network with host bits.
        let mut p = profile();
        p.egress = [crate::profile::Destination {
            net: "198.18.1.2/24".parse().unwrap(),
            protocol: 6,
            port: Some(443),
        }]
        .into();
        let opts = Options {
            name: "x",
            now: 0,
            enforcers: None,
        };
        let text = policy(&[p], &opts).unwrap();
        assert!(text.contains("cidr = \"198.18.1.0/24\""), "{text}");
        crate::load::parse_policy(std::path::Path::new("g.toml"), &text).unwrap();
        // Found by fuzzing: a service account identity with an empty namespace.
        let mut p = profile();
        p.subject.identity = "serviceaccount:/web".to_owned();
        let text = policy(&[p], &opts).unwrap();
        crate::load::parse_policy(std::path::Path::new("g.toml"), &text).unwrap();
        assert!(text.contains("learned from 1 container(s) between 2025-12-06T05:46:40Z"));
        assert!(text.contains("(1 min)"), "{text}");
        assert_eq!(pol.profile.on_anomaly, crate::behavior::OnAnomaly::Report);
    }

    #[test]
    fn a_shell_that_was_run_stays_allowed_and_names_are_checked() {
        let mut p = profile();
        p.add_exec("/bin/sh", "/bin/busybox", true, 1);
        let only_fanotify = [Enforcer::Fanotify];
        let opts = |name| Options {
            name,
            now: 0,
            enforcers: Some(&only_fanotify),
        };
        let text = policy(&[p], &opts("x")).unwrap();
        assert!(text.contains("# environ = true  (no enforcer"));
        crate::load::parse_policy(std::path::Path::new("g.toml"), &text).unwrap();
        assert!(!text.contains("deny_shells = true"));
        assert!(!text.contains("drop_exec = true"));
        assert!(text.contains("shells were run (/bin/sh)"));
        assert!(policy(&[], &opts("x")).is_err());
        assert!(policy(&[profile()], &opts("a b")).is_err());
        // Found by fuzzing (fuzz/regressions/profile_decode/): a profile naming no image.
        let mut nameless = profile();
        nameless.subject.image = None;
        nameless.subject.digest = None;
        assert!(matches!(
            policy(&[nameless], &opts("x")),
            Err(GenerateError::NoImage)
        ));
    }

    /// Found by fuzzing (fuzz/regressions/profile_decode/): a newline in a recorded name ended
    /// the comment it was quoted in, and the rest became policy lines.
    #[test]
    fn recorded_names_cannot_write_policy_lines() {
        let evil = "/tmp/x\nenviron = false\n#";
        let s = Subject::of(Some("img\n[egress]\nmode = \"off\""), None, None, None).unwrap();
        let mut p = Profile::new(s, 1);
        p.add_container("learn\nx = 1", 1);
        p.add_exec("/bin/sh", "", false, 1);
        p.add_exec(evil, "", true, 1);
        p.add_exec("/tmp/*", "", true, 1);
        p.add_secret("/run/secrets/a\rb", evil, 1);
        let text = policy(
            &[p],
            &Options {
                name: "x",
                now: 0,
                enforcers: None,
            },
        )
        .unwrap();
        let loaded = crate::load::parse_policy(std::path::Path::new("g.toml"), &text)
            .unwrap_or_else(|e| panic!("{text}\n{e:?}"));
        assert!(loaded.policy.behavior.environ, "{text}");
        let listed = |l: &[toml::Spanned<String>]| -> Vec<String> {
            l.iter().map(|s| s.get_ref().clone()).collect()
        };
        assert_eq!(listed(&loaded.policy.behavior.allowed_exec), ["/bin/sh"]);
        assert!(loaded.policy.behavior.secret_readers.is_empty());
        assert!(text.contains("2 program(s) with names a policy cannot hold"));
        assert!(!text.lines().any(|l| l.starts_with("environ = false")));
        assert!(text.contains("/tmp/x\\u{a}environ = false"), "{text}");
        assert_eq!(c("plain /bin/sh"), "plain /bin/sh");
    }

    /// Found by fuzzing (fuzz/regressions/profile_decode/): an image name with glob syntax
    /// made a policy that did not load, or one that selected other images.
    #[test]
    fn image_names_are_matched_literally() {
        for image in ["docker.i/olrbi]ry/nginx:1", "*", "!x", "a{b,c}\\?"] {
            let s = Subject::of(Some(image), None, None, None).unwrap();
            let mut p = Profile::new(s, 1);
            p.add_container("learn", 1);
            let opts = Options {
                name: "x",
                now: 0,
                enforcers: None,
            };
            let text = policy(&[p], &opts).unwrap();
            let loaded = crate::load::parse_policy(std::path::Path::new("g.toml"), &text)
                .unwrap_or_else(|e| panic!("{text}\n{e:?}"));
            let globs = &loaded.policy.selector.images;
            assert_eq!(globs.len(), 1, "{text}");
            let glob = globs[0].get_ref();
            assert!(glob_match(glob, image), "{glob} must match {image}");
            assert!(!glob_match(glob, "docker.io/library/other:1"), "{glob}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(span(90_061), "1 d 1 h");
        assert_eq!(default_name(&profile()), "learned-app");
        // Found by fuzzing (fuzz/regressions/profile_decode/): an upper-case letter in the
        // image name made a default name the loader refuses.
        let s = Subject::of(Some("registry/App_X:1"), None, None, None).unwrap();
        assert_eq!(default_name(&Profile::new(s, 0)), "learned-app-x");
    }
}
