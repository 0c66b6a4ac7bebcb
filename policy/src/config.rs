//! `/etc/ociguard/config.toml`: where the delegate runtime, the policies and the decision log live.
//!
//! A missing file means "all defaults" (a fresh install must work); a file that exists but does not
//! parse is an error naming the file and line, never a silent fallback. A file that someone other
//! than root (or ociguard's own user) could have written is refused before it is parsed (see
//! [`crate::trust`]): it chooses the policy directory, and so every container's policy.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::location::Location;
use crate::trust::{Trust, TrustError};

/// Default location of the runtime configuration.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ociguard/config.toml";
/// Environment variable that overrides [`DEFAULT_CONFIG_PATH`] (tests, packaging).
pub const CONFIG_ENV: &str = "OCIGUARD_CONFIG";

/// Directories searched for a runtime named without a path. Deliberately not `$PATH`: engines
/// call us with whatever environment they have, and a runtime must not be hijackable by it.
const SEARCH_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The name that selects the runtime built into `ociguard` (youki's libcontainer, in process)
/// instead of a runtime binary; also what a search list falls back to when it finds nothing.
pub const BUILTIN: &str = "builtin";

/// The delegate runtime: one path or name, or a search list tried in order. `"builtin"` (alone
/// or as an entry of the list) is the runtime built into `ociguard`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RuntimeSetting {
    One(String),
    SearchList(Vec<String>),
}

/// The runtime a command is delegated to, once resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// A runtime binary (crun, runc), run by `execve`.
    Exec(PathBuf),
    /// The runtime built into `ociguard` (youki's libcontainer), run in process.
    Builtin,
}

impl Runtime {
    /// The binary's path; `None` for the builtin runtime.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Runtime::Exec(path) => Some(path),
            Runtime::Builtin => None,
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Runtime::Exec(path) => write!(f, "{}", path.display()),
            Runtime::Builtin => f.write_str(BUILTIN),
        }
    }
}

impl Default for RuntimeSetting {
    fn default() -> Self {
        RuntimeSetting::SearchList(vec!["crun".to_owned(), "runc".to_owned()])
    }
}

/// Parsed `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub runtime: RuntimeSetting,
    #[serde(default = "default_policy_dir")]
    pub policy_dir: PathBuf,
    #[serde(default = "default_decision_log")]
    pub decision_log: PathBuf,
    /// When an append would take the decision log past this size, it is rotated first
    /// (`decisions.jsonl` -> `.1` -> ... -> `.<keep>`); 0: never rotate (logrotate's job).
    #[serde(default = "default_decision_log_max_bytes")]
    pub decision_log_max_bytes: u64,
    /// How many rotated decision logs are kept.
    #[serde(default = "default_decision_log_keep")]
    pub decision_log_keep: u32,
    /// Per-container records ociguard keeps for `exec` (tmpfs: gone after reboot, like the containers).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// `ociguard-hook`, injected as OCI hooks by absolute path.
    #[serde(default = "default_hook_path")]
    pub hook_path: PathBuf,
    /// ociguardd's socket.
    #[serde(default = "default_monitor_socket")]
    pub monitor_socket: PathBuf,
    /// Where hooks spool identity records while the monitor is down (best-effort identity).
    #[serde(default = "default_spool_dir")]
    pub spool_dir: PathBuf,
    /// `apparmor_parser`, run by absolute path to compile and load generated profiles.
    #[serde(default = "default_apparmor_parser")]
    pub apparmor_parser: PathBuf,
    /// If non-empty, only policies whose digest (`sha256:...`, see `ociguardctl policy check`)
    /// is listed may apply; any other selected policy makes `create` fail.
    #[serde(default)]
    pub pinned_digests: Vec<String>,
    /// Where image labels are looked up.
    #[serde(default)]
    pub labels: LabelSources,
    /// How egress rules are installed and host names resolved.
    #[serde(default)]
    pub egress: EgressNode,
    /// uid besides root that may own config and policies: the policy directory and its files
    /// may belong to it (this file itself only to root or ociguard's own user, since it is what
    /// names the admin).
    #[serde(default)]
    pub admin_uid: Option<u32>,
}

/// `[egress]` of config.toml: the node side of egress policies.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressNode {
    /// How `ociguard-hook egress` installs the ruleset.
    #[serde(default)]
    pub installer: Installer,
    /// `nft`, run by absolute path by `ociguard-hook egress` inside the container's namespace
    /// (`installer = "nft"` only).
    #[serde(default = "default_nft")]
    pub nft: PathBuf,
    /// NFLOG group of the log statement on denied packets.
    #[serde(default = "default_nflog_group")]
    pub nflog_group: u16,
    /// Admin-pinned names (`/etc/hosts` format), consulted before the system resolver; a
    /// missing file is ignored.
    #[serde(default = "default_egress_hosts")]
    pub hosts_file: PathBuf,
    /// Upper bound on resolving a policy's host names at create time.
    #[serde(default = "default_resolve_timeout")]
    pub resolve_timeout_ms: u64,
    /// The node's resolver configuration; its nameservers are allowed DNS (port 53) when a
    /// policy names hosts (as are those of the container's own `/etc/resolv.conf` mount).
    #[serde(default = "default_resolv_conf")]
    pub resolv_conf: PathBuf,
}

impl Default for EgressNode {
    fn default() -> Self {
        EgressNode {
            installer: Installer::default(),
            nft: default_nft(),
            nflog_group: default_nflog_group(),
            hosts_file: default_egress_hosts(),
            resolve_timeout_ms: default_resolve_timeout(),
            resolv_conf: default_resolv_conf(),
        }
    }
}

/// How the egress ruleset reaches the kernel. Both install it in one nf_tables transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Installer {
    /// One netlink batch sent by the hook itself: no process start-up.
    #[default]
    Netlink,
    /// `nft -j -f -` (nft's JSON API), for nodes that want nft's own parser in the path.
    Nft,
}

impl Installer {
    pub fn as_str(self) -> &'static str {
        match self {
            Installer::Netlink => "netlink",
            Installer::Nft => "nft",
        }
    }
}

impl std::str::FromStr for Installer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "netlink" => Ok(Installer::Netlink),
            "nft" => Ok(Installer::Nft),
            other => Err(format!("unknown installer {other:?} (netlink or nft)")),
        }
    }
}

fn default_nft() -> PathBuf {
    PathBuf::from("/usr/sbin/nft")
}
fn default_nflog_group() -> u16 {
    100
}
fn default_egress_hosts() -> PathBuf {
    PathBuf::from("/etc/ociguard/hosts")
}
fn default_resolve_timeout() -> u64 {
    2000
}
fn default_resolv_conf() -> PathBuf {
    PathBuf::from("/etc/resolv.conf")
}

/// `[labels]`: the engines' image stores.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSources {
    /// containers/storage (Podman, CRI-O, Buildah): graph root and run root pairs. A bundle under
    /// either is looked up in the graph root's metadata.
    #[serde(default = "default_storage")]
    pub containers_storage: Vec<StorageRoots>,
    /// containerd's API socket.
    #[serde(default = "default_containerd_socket")]
    pub containerd_socket: PathBuf,
    /// Upper bound on a label lookup (containerd API round trips).
    #[serde(default = "default_label_timeout")]
    pub timeout_ms: u64,
    /// Docker's data root (`dockerd --data-root`): its container and image records.
    #[serde(default = "default_docker_root")]
    pub docker_root: PathBuf,
    /// The containerd namespace dockerd creates its containers in (`--containerd-namespace`):
    /// a bundle there is Docker's.
    #[serde(default = "default_docker_namespace")]
    pub docker_namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageRoots {
    pub graph_root: PathBuf,
    pub run_root: PathBuf,
}

impl Default for LabelSources {
    fn default() -> Self {
        LabelSources {
            containers_storage: default_storage(),
            containerd_socket: default_containerd_socket(),
            timeout_ms: default_label_timeout(),
            docker_root: default_docker_root(),
            docker_namespace: default_docker_namespace(),
        }
    }
}

fn default_storage() -> Vec<StorageRoots> {
    vec![StorageRoots {
        graph_root: PathBuf::from("/var/lib/containers/storage"),
        run_root: PathBuf::from("/run/containers/storage"),
    }]
}
fn default_containerd_socket() -> PathBuf {
    PathBuf::from("/run/containerd/containerd.sock")
}
fn default_label_timeout() -> u64 {
    500
}
fn default_docker_root() -> PathBuf {
    PathBuf::from("/var/lib/docker")
}
fn default_docker_namespace() -> String {
    "moby".to_owned()
}

fn default_policy_dir() -> PathBuf {
    PathBuf::from("/etc/ociguard/policies")
}
fn default_decision_log() -> PathBuf {
    PathBuf::from("/var/log/ociguard/decisions.jsonl")
}
fn default_decision_log_max_bytes() -> u64 {
    64 << 20
}
fn default_decision_log_keep() -> u32 {
    4
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/run/ociguard")
}
fn default_hook_path() -> PathBuf {
    PathBuf::from("/usr/local/bin/ociguard-hook")
}
fn default_monitor_socket() -> PathBuf {
    PathBuf::from("/run/ociguard/monitor.sock")
}
fn default_spool_dir() -> PathBuf {
    PathBuf::from("/var/lib/ociguard/spool")
}
fn default_apparmor_parser() -> PathBuf {
    // Debian, Ubuntu and SUSE all ship it here (on merged-/usr systems /sbin links to /usr/sbin).
    PathBuf::from("/sbin/apparmor_parser")
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            runtime: RuntimeSetting::default(),
            policy_dir: default_policy_dir(),
            decision_log: default_decision_log(),
            decision_log_max_bytes: default_decision_log_max_bytes(),
            decision_log_keep: default_decision_log_keep(),
            state_dir: default_state_dir(),
            hook_path: default_hook_path(),
            monitor_socket: default_monitor_socket(),
            spool_dir: default_spool_dir(),
            apparmor_parser: default_apparmor_parser(),
            pinned_digests: Vec::new(),
            labels: LabelSources::default(),
            egress: EgressNode::default(),
            admin_uid: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file, or a directory above it, could be written by someone untrusted.
    #[error("{source}")]
    Untrusted { path: PathBuf, source: TrustError },
    #[error("{location}: {message}")]
    Parse { location: Location, message: String },
    #[error("no delegate runtime found: tried {tried} (set `runtime` in {config})")]
    NoRuntime { tried: String, config: PathBuf },
    #[error(
        "delegate runtime {path} is ociguard itself (set `runtime` in {config} to crun or runc)"
    )]
    RuntimeIsSelf { path: PathBuf, config: PathBuf },
}

impl RuntimeConfig {
    /// The config path in effect: `$OCIGUARD_CONFIG` or the default.
    pub fn path_from_env() -> PathBuf {
        std::env::var_os(CONFIG_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    /// Load `path`; a file that does not exist yields the defaults. One that exists must be
    /// trusted ([`Trust::root_and_self`]: the admin uid is set in this very file, so it cannot
    /// vouch for it), and is checked on the descriptor it is read from.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        use std::io::Read;
        let mut file = match Trust::root_and_self().open_file(path) {
            Ok(file) => file,
            Err(e) if e.is_missing() => return Ok(Self::default()),
            Err(source) => {
                return Err(ConfigError::Untrusted {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: RuntimeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            location: Location::from_span(path, text, e.span()),
            message: e.message().to_owned(),
        })?;
        // Relative paths in a root-owned config would depend on the engine's cwd.
        let base = path.parent().unwrap_or(Path::new("/"));
        for p in [
            &mut config.policy_dir,
            &mut config.decision_log,
            &mut config.state_dir,
            &mut config.hook_path,
            &mut config.monitor_socket,
            &mut config.spool_dir,
            &mut config.apparmor_parser,
            &mut config.egress.nft,
            &mut config.egress.hosts_file,
            &mut config.egress.resolv_conf,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    /// Resolve the delegate runtime: an absolute, executable path that is not `self_exe`, or
    /// the builtin runtime. `builtin` says whether this `ociguard` has one: it is chosen when
    /// configured by name, or when the search list (the default `["crun", "runc"]`) finds
    /// nothing. A single runtime named explicitly never falls back: the operator chose it.
    pub fn resolve_runtime(
        &self,
        config_path: &Path,
        self_exe: Option<&Path>,
        builtin: bool,
    ) -> Result<Runtime, ConfigError> {
        let (candidates, fallback): (Vec<&str>, bool) = match &self.runtime {
            RuntimeSetting::One(one) => (vec![one.as_str()], false),
            RuntimeSetting::SearchList(list) => (list.iter().map(String::as_str).collect(), true),
        };
        let mut tried = Vec::new();
        for candidate in candidates {
            if candidate == BUILTIN {
                if builtin {
                    return Ok(Runtime::Builtin);
                }
                tried.push("builtin (not in this build of ociguard)".to_owned());
                continue;
            }
            let paths: Vec<PathBuf> = if candidate.contains('/') {
                vec![PathBuf::from(candidate)]
            } else {
                SEARCH_DIRS
                    .iter()
                    .map(|d| Path::new(d).join(candidate))
                    .collect()
            };
            for path in paths {
                if is_executable(&path) {
                    if let (Some(me), Ok(real)) = (self_exe, path.canonicalize()) {
                        if real == me {
                            return Err(ConfigError::RuntimeIsSelf {
                                path,
                                config: config_path.to_owned(),
                            });
                        }
                    }
                    return Ok(Runtime::Exec(path));
                }
                tried.push(path.display().to_string());
            }
        }
        if fallback && builtin {
            return Ok(Runtime::Builtin);
        }
        Err(ConfigError::NoRuntime {
            tried: tried.join(", "),
            config: config_path.to_owned(),
        })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.is_absolute()
        && std::fs::metadata(path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_missing() {
        let c = RuntimeConfig::load(Path::new("/nonexistent/ociguard.toml")).unwrap();
        assert_eq!(c, RuntimeConfig::default());
    }

    #[test]
    fn an_untrusted_config_is_refused_before_it_is_parsed() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skip: not root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "admin_uid = 1000\n").unwrap();
        let c = RuntimeConfig::load(&path).unwrap();
        assert_eq!(c.admin_uid, Some(1000));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = RuntimeConfig::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Untrusted { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "{0}: file is group- and world-writable (mode 0666); fix: chmod go-w {0}",
                path.display()
            )
        );
        // The admin uid it names cannot vouch for the file that names it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::chown(&path, Some(1000), None).unwrap();
        let err = RuntimeConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("owned by uid 1000, not root"), "{err}");
        // Missing below a trusted directory: defaults, as before.
        assert_eq!(
            RuntimeConfig::load(&dir.path().join("nope/config.toml")).unwrap(),
            RuntimeConfig::default()
        );
    }

    #[test]
    fn parse_error_names_file_and_line() {
        let err = RuntimeConfig::parse(
            "runtime = \"/usr/bin/crun\"\npolicy_dirr = \"x\"\n",
            Path::new("/etc/ociguard/config.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("/etc/ociguard/config.toml:2:"), "{err}");
        assert!(err.contains("policy_dirr"), "{err}");
    }

    #[test]
    fn relative_paths_are_resolved_against_the_config_dir() {
        let c = RuntimeConfig::parse("policy_dir = \"pol\"\n", Path::new("/tmp/x/config.toml"))
            .unwrap();
        assert_eq!(c.policy_dir, PathBuf::from("/tmp/x/pol"));
    }

    #[test]
    fn runtime_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-runtime");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        let cfg = Path::new("/c.toml");
        let mut c = RuntimeConfig {
            runtime: RuntimeSetting::One(fake.display().to_string()),
            ..Default::default()
        };
        // not executable yet
        // not executable yet; a runtime named alone never falls back to the builtin one
        for builtin in [false, true] {
            assert!(matches!(
                c.resolve_runtime(cfg, None, builtin),
                Err(ConfigError::NoRuntime { .. })
            ));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            c.resolve_runtime(cfg, None, true).unwrap(),
            Runtime::Exec(fake.clone())
        );
        let me = fake.canonicalize().unwrap();
        assert!(matches!(
            c.resolve_runtime(cfg, Some(&me), true),
            Err(ConfigError::RuntimeIsSelf { .. })
        ));
        c.runtime = RuntimeSetting::SearchList(vec!["no-such-runtime-xyz".into()]);
        let err = c.resolve_runtime(cfg, None, false).unwrap_err().to_string();
        assert!(err.contains("/usr/bin/no-such-runtime-xyz"), "{err}");
        // A search list that finds nothing falls back to the builtin runtime when there is one.
        assert_eq!(
            c.resolve_runtime(cfg, None, true).unwrap(),
            Runtime::Builtin
        );
        // Named, in a list or alone.
        c.runtime = RuntimeSetting::One(BUILTIN.into());
        assert_eq!(
            c.resolve_runtime(cfg, None, true).unwrap(),
            Runtime::Builtin
        );
        let err = c.resolve_runtime(cfg, None, false).unwrap_err().to_string();
        assert!(err.contains("builtin (not in this build"), "{err}");
        c.runtime = RuntimeSetting::SearchList(vec![
            "no-such-runtime-xyz".into(),
            BUILTIN.into(),
            fake.display().to_string(),
        ]);
        assert_eq!(
            c.resolve_runtime(cfg, None, true).unwrap(),
            Runtime::Builtin
        );
        assert_eq!(
            c.resolve_runtime(cfg, None, false).unwrap(),
            Runtime::Exec(fake)
        );
    }
}
