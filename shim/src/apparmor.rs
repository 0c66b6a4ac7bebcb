//! AppArmor on this host: is it there, and getting a generated profile into the kernel.
//!
//! The profile is rendered by `ociguard_policy::apparmor` (pure). This module owns the I/O:
//! detection (`/sys/module/apparmor/parameters/enabled` and securityfs), compiling and loading
//! with `apparmor_parser -r` (absolute path, minimal environment), and a cache of loaded profiles
//! keyed by the digest of their text under `<state_dir>/apparmor/`.
//!
//! It must never let a config name a profile the kernel does not have: crun would fail the
//! start, or worse, a stale profile of the same name would apply. So the profile is set in the
//! document only where AppArmor is available, and `create` writes that document only after
//! [`commit`] has seen the kernel list the profile.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ociguard_policy::annotations::{self, APPARMOR_DIGEST};
use ociguard_policy::apparmor::{self as render, Profile};
use ociguard_policy::change::Change;
use ociguard_policy::excerpt::excerpt;
use ociguard_policy::model::AppArmorMode;
use ociguard_policy::{LoadedPolicy, Mode, Rewritten, RuntimeConfig};

use crate::{atomic, Context};

/// `Y` when the kernel has AppArmor and it is enabled.
pub const ENABLED_PARAM: &str = "/sys/module/apparmor/parameters/enabled";
/// AppArmor's securityfs directory: profiles are loaded and listed through it.
pub const SECURITYFS: &str = "/sys/kernel/security/apparmor";
/// `PATH` for the parser: it execs nothing itself, but never inherit the engine's.
const CHILD_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// The parser's stderr is quoted in errors up to this many bytes.
const MAX_STDERR: usize = 4096;

/// Where AppArmor is looked for and how profiles are loaded; [`Host::system`] in production,
/// other paths in tests (a stand-in parser, a fake securityfs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub enabled_param: PathBuf,
    pub securityfs: PathBuf,
    pub parser: PathBuf,
    /// `<state_dir>/apparmor`: profile texts and the markers of loaded ones.
    pub cache_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Available,
    Unavailable { reason: String },
}

/// What [`Host::ensure_loaded`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// Compiled and loaded (replacing any profile of the same name) just now.
    Now,
    /// Already loaded by an earlier create with the same profile text.
    Cached,
}

#[derive(Debug, thiserror::Error)]
pub enum AppArmorError {
    #[error("policy {policy:?} requires AppArmor (apparmor.mode = \"required\"), but this host lacks it: {reason}")]
    Required { policy: String, reason: String },
    #[error("policy {policy:?}: AppArmor profile: {source}")]
    Render {
        policy: String,
        source: render::AppArmorError,
    },
    #[error("AppArmor profile: {0}")]
    Write(crate::atomic::StoreError),
    #[error("run {parser}: {source}")]
    Spawn {
        parser: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{parser} could not compile and load AppArmor profile {name} ({path}), {status}: {stderr}"
    )]
    Parser {
        parser: PathBuf,
        name: String,
        path: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{parser} reported success but the kernel does not list AppArmor profile {name} in {profiles}")]
    NotLoaded {
        parser: PathBuf,
        name: String,
        profiles: PathBuf,
    },
    #[error("record loaded AppArmor profile: {0}")]
    Cache(crate::atomic::StoreError),
}

impl Host {
    /// The real kernel interfaces, with the parser and state directory from `config`.
    pub fn system(config: &RuntimeConfig) -> Host {
        Host {
            enabled_param: PathBuf::from(ENABLED_PARAM),
            securityfs: PathBuf::from(SECURITYFS),
            parser: config.apparmor_parser.clone(),
            cache_dir: config.state_dir.join("apparmor"),
        }
    }

    /// Can a profile be loaded and applied here? The reason says what is missing.
    pub fn availability(&self) -> Availability {
        let unavailable = |reason: String| Availability::Unavailable { reason };
        let param = self.enabled_param.display();
        match std::fs::read_to_string(&self.enabled_param) {
            Ok(v) if v.trim() == "Y" => {}
            Ok(v) => {
                return unavailable(format!(
                    "AppArmor is disabled in the kernel ({param} is {:?})",
                    v.trim()
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return unavailable(format!(
                    "the kernel has no AppArmor ({param} does not exist)"
                ))
            }
            Err(e) => return unavailable(format!("read {param}: {e}")),
        }
        if !self.securityfs.is_dir() {
            return unavailable(format!(
                "AppArmor's securityfs is not mounted ({} does not exist)",
                self.securityfs.display()
            ));
        }
        if !is_executable(&self.parser) {
            return unavailable(format!(
                "{} is not installed (install apparmor, or set apparmor_parser in config.toml)",
                self.parser.display()
            ));
        }
        Availability::Available
    }

    /// Does the kernel list profile `name`? (`<securityfs>/profiles`: one `name (mode)` a line.)
    pub fn kernel_has(&self, name: &str) -> bool {
        std::fs::read_to_string(self.securityfs.join("profiles"))
            .map(|list| {
                list.lines().any(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with(" ("))
                })
            })
            .unwrap_or(false)
    }

    /// Compile and load `profile` with replace semantics unless a profile with the same digest
    /// was loaded before and the kernel still has it (a reboot or `aa-teardown` removes profiles;
    /// the marker alone is not trusted).
    pub fn ensure_loaded(&self, profile: &Profile) -> Result<Loaded, AppArmorError> {
        let hex = profile
            .digest
            .strip_prefix("sha256:")
            .unwrap_or(&profile.digest);
        let marker = self.cache_dir.join(hex);
        if marker.is_file() && self.kernel_has(&profile.name) {
            return Ok(Loaded::Cached);
        }
        let path = self.cache_dir.join(format!("{hex}.profile"));
        // The profile texts name the container's secret paths: the store's directory is 0700.
        atomic::store(&self.cache_dir, &path, profile.text.as_bytes())
            .map_err(AppArmorError::Write)?;
        // -r: replace a loaded profile of the same name atomically (a retried create, or a cache
        // marker lost with the state dir). -K: no parser cache; ours is keyed by content and
        // per-container profiles would only fill /var/cache/apparmor.
        let out = Command::new(&self.parser)
            .arg("-r")
            .arg("-K")
            .arg(&path)
            .env_clear()
            .env("PATH", CHILD_PATH)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| AppArmorError::Spawn {
                parser: self.parser.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(AppArmorError::Parser {
                parser: self.parser.clone(),
                name: profile.name.clone(),
                path,
                status: out.status,
                stderr: stderr_excerpt(&out.stderr),
            });
        }
        if !self.kernel_has(&profile.name) {
            return Err(AppArmorError::NotLoaded {
                parser: self.parser.clone(),
                name: profile.name.clone(),
                profiles: self.securityfs.join("profiles"),
            });
        }
        atomic::store(
            &self.cache_dir,
            &marker,
            format!("{}\n", profile.name).as_bytes(),
        )
        .map_err(AppArmorError::Cache)?;
        Ok(Loaded::Now)
    }
}

/// Can the kernel apply AppArmor profiles (whether or not the parser is installed)? For `features`.
pub fn kernel_enabled() -> bool {
    std::fs::read_to_string(ENABLED_PARAM).is_ok_and(|v| v.trim() == "Y")
        && Path::new(SECURITYFS).is_dir()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.is_absolute()
        && std::fs::metadata(path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
}

fn stderr_excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    excerpt(text.trim(), MAX_STDERR).into_owned()
}

/// AppArmor's part of a create, decided before anything is written.
#[derive(Debug, Clone)]
pub struct AppArmorPlan {
    /// The generated profile (shown by `ociguardctl explain` even where it is not applied).
    pub profile: Profile,
    /// The document names the profile: [`commit`] must load it before config.json is written.
    pub load: bool,
}

/// [`prepare_on`] this host.
pub fn prepare(
    ctx: &Context<'_>,
    policy: &LoadedPolicy,
    rewritten: &mut Rewritten,
) -> Result<Option<AppArmorPlan>, AppArmorError> {
    prepare_on(&Host::system(ctx.config), policy, rewritten)
}

/// Render the chosen policy's profile and, where it can be applied, set it in the document and
/// record the change. No side effects beyond reading `host`'s detection files: loading happens
/// in [`commit`]. `Ok(None)`: the policy's AppArmor mode is off.
pub fn prepare_on(
    host: &Host,
    policy: &LoadedPolicy,
    rewritten: &mut Rewritten,
) -> Result<Option<AppArmorPlan>, AppArmorError> {
    let mode = policy.policy.apparmor.mode;
    // Whatever happens below, an earlier attempt's digest must not outlive its profile.
    annotations::set(&mut rewritten.document, APPARMOR_DIGEST, None);
    if mode == AppArmorMode::Off {
        return Ok(None);
    }
    let render_err = |source| AppArmorError::Render {
        policy: policy.name().to_owned(),
        source,
    };
    // With egress restricted, raw and packet sockets are denied as well (a second line behind
    // the CAP_NET_RAW drop).
    let egress_restricted = policy.policy.egress.restricts();
    // Rendered whatever the host: a bundle that cannot get a profile fails the same way on
    // every node, not only on those with AppArmor.
    let profile =
        render::render(policy, &rewritten.document, egress_restricted).map_err(render_err)?;
    let enforce = policy.policy.mode == Mode::Enforce;
    let (change, load) = match host.availability() {
        Availability::Unavailable { reason } => {
            if enforce && mode == AppArmorMode::Required {
                return Err(AppArmorError::Required {
                    policy: policy.name().to_owned(),
                    reason,
                });
            }
            (Change::AppArmorUnavailable { reason }, false)
        }
        Availability::Available => {
            let replaced = if enforce {
                let replaced = render::set_profile(&mut rewritten.document, &profile.name)
                    .map_err(render_err)?;
                annotations::set(
                    &mut rewritten.document,
                    APPARMOR_DIGEST,
                    Some(&profile.digest),
                );
                replaced
            } else {
                None
            };
            let change = Change::AppArmorProfile {
                name: profile.name.clone(),
                digest: profile.digest.clone(),
                applied: enforce,
                secrets: profile.secrets.clone(),
                replaced,
            };
            (change, enforce)
        }
    };
    rewritten.decision.changes.push(change);
    Ok(Some(AppArmorPlan { profile, load }))
}

/// Load the planned profile (cached by digest) if the plan sets it. Must succeed before the
/// rewritten config.json, which names the profile, is written.
pub fn commit(ctx: &Context<'_>, plan: Option<&AppArmorPlan>) -> Result<(), AppArmorError> {
    commit_on(&Host::system(ctx.config), ctx, plan)
}

/// [`commit`] with an explicit host.
pub fn commit_on(
    host: &Host,
    ctx: &Context<'_>,
    plan: Option<&AppArmorPlan>,
) -> Result<(), AppArmorError> {
    let Some(plan) = plan.filter(|p| p.load) else {
        return Ok(());
    };
    let p = &plan.profile;
    match host.ensure_loaded(p)? {
        Loaded::Now => ctx.logger.info(&format!(
            "loaded AppArmor profile {} ({})",
            p.name, p.digest
        )),
        Loaded::Cached => ctx.logger.debug(&format!(
            "AppArmor profile {} ({}) already loaded",
            p.name, p.digest
        )),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(dir: &Path) -> Host {
        Host {
            enabled_param: dir.join("enabled"),
            securityfs: dir.join("securityfs"),
            parser: PathBuf::from("/bin/true"),
            cache_dir: dir.join("state/apparmor"),
        }
    }

    fn reason(a: Availability) -> String {
        match a {
            Availability::Unavailable { reason } => reason,
            Availability::Available => panic!("available"),
        }
    }

    #[test]
    fn detection_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        assert!(reason(h.availability()).contains("kernel has no AppArmor"));
        std::fs::write(&h.enabled_param, "N\n").unwrap();
        assert!(reason(h.availability()).contains("disabled"));
        std::fs::write(&h.enabled_param, "Y\n").unwrap();
        assert!(reason(h.availability()).contains("securityfs"));
        std::fs::create_dir(&h.securityfs).unwrap();
        assert_eq!(h.availability(), Availability::Available);
        let h = Host {
            parser: dir.path().join("no-parser"),
            ..h
        };
        assert!(reason(h.availability()).contains("no-parser is not installed"));
    }

    #[test]
    fn kernel_profile_list() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        assert!(!h.kernel_has("ociguard-a-1"));
        std::fs::create_dir(&h.securityfs).unwrap();
        std::fs::write(
            h.securityfs.join("profiles"),
            "ociguard-a-12 (enforce)\nociguard-a-1//secret_reader (enforce)\ndocker-default (enforce)\n",
        )
        .unwrap();
        assert!(!h.kernel_has("ociguard-a-1"));
        assert!(h.kernel_has("ociguard-a-12"));
        assert!(h.kernel_has("docker-default"));
    }

    #[test]
    fn stderr_is_bounded() {
        let long = "é".repeat(5000);
        let s = stderr_excerpt(long.as_bytes());
        assert!(
            s.len() < 4200 && s.ends_with("(10000 bytes)"),
            "{}",
            s.len()
        );
        assert_eq!(stderr_excerpt(b"  error\n"), "error");
    }
}
