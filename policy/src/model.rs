//! The policy file format, v1: one TOML file per policy in the policy directory.
//!
//! Every section is `deny_unknown_fields`, so a typo is a load error with its line, never a key
//! that is silently ignored. Values that need more than type checking (syscall and capability
//! names, globs) keep their byte span so validation can point at the offending line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::seccomp::Errno;

/// Name of the policy that applies when no other policy's `[match]` selects a container.
pub const DEFAULT_POLICY: &str = "default";

/// What ociguard does with a policy's demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Apply everything; if something cannot be applied the container does not start.
    #[default]
    Enforce,
    /// Record what would be applied; only add logging (seccomp `SCMP_ACT_LOG`), never deny.
    Audit,
    /// `audit`, and ociguardd records what the container does into the behaviour profile of
    /// its image and service identity (`ociguardctl profile show`, `policy generate`).
    Learn,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
            Mode::Learn => "learn",
        }
    }

    /// Does the policy block what it forbids (rather than only report it)?
    pub fn enforces(self) -> bool {
        self == Mode::Enforce
    }

    /// The mode named by `s` (an annotation ociguard wrote); anything else is `enforce`, the
    /// strictest reading.
    pub fn parse_or_enforce(s: &str) -> Mode {
        match s {
            "audit" => Mode::Audit,
            "learn" => Mode::Learn,
            _ => Mode::Enforce,
        }
    }
}

/// One policy file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: Spanned<String>,
    #[serde(default)]
    pub mode: Mode,
    /// Breaks ties between policies whose selectors are equally specific; higher wins.
    #[serde(default)]
    pub priority: i32,
    /// May image labels select this policy (label conditions in `[match]`, or the
    /// `org.ociguard.profile` label naming it)? Labels are written by whoever built the image.
    ///
    /// Only about image labels: `[match] kubernetes_labels` (pod labels) is allowed either way,
    /// as `[match] annotations` is. See [`Selector::kubernetes_labels`] for why.
    #[serde(default = "yes")]
    pub selectable_by_label: bool,
    /// `"required"`: refuse to start a container this policy selects when its image labels
    /// could not be resolved.
    #[serde(default)]
    pub labels: LabelRequirement,
    /// `"required"`: refuse to start a container this policy selects when its decision cannot
    /// be written to the decision log (an audit trail that must be complete). By default a
    /// failed append is a warning: a full /var/log must not stop a node's containers. Left out
    /// of the canonical bytes when optional, so no existing policy's digest changed.
    #[serde(default, skip_serializing_if = "LabelRequirement::is_optional")]
    pub decision_log: LabelRequirement,
    #[serde(default, rename = "match")]
    pub selector: Selector,
    #[serde(default)]
    pub seccomp: SeccompRules,
    #[serde(default)]
    pub process: ProcessRules,
    #[serde(default)]
    pub annotations: AnnotationRules,
    #[serde(default)]
    pub apparmor: AppArmorRules,
    /// `[behavior]`: what the running container may do (exec, shells, secrets); held by
    /// ociguardd's guard. Left out of the canonical bytes when off, so adding it changed no
    /// existing policy's digest.
    #[serde(default, skip_serializing_if = "BehaviorRules::is_off")]
    pub behavior: BehaviorRules,
    /// `[profile]`: compare what the container does with the learned profile of its image
    /// and service identity. Left out of the canonical bytes when off.
    #[serde(default, skip_serializing_if = "ProfileRules::is_off")]
    pub profile: ProfileRules,
    #[serde(default)]
    pub identity: IdentityRules,
    /// Left out of the canonical bytes when unrestricted, so adding the section to the model
    /// did not change the digest of any existing policy.
    #[serde(default, skip_serializing_if = "EgressRules::is_unrestricted")]
    pub egress: EgressRules,
}

/// Whether something a policy can depend on (image labels, the decision log) must be there
/// for the policy to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelRequirement {
    #[default]
    Optional,
    Required,
}

impl LabelRequirement {
    pub fn is_optional(&self) -> bool {
        *self == LabelRequirement::Optional
    }
}

/// Which kind of container: a pod sandbox (pause) container or an application container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerType {
    #[default]
    Container,
    Sandbox,
}

/// `[match]`: every condition given must hold (AND); within a list, any entry may match (OR).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Globs over the image reference (`*` stays within one `/` segment, `**` crosses them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Spanned<String>>,
    /// Image digests (`sha256:...`, exact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digests: Vec<Spanned<String>>,
    /// Image label key → glob over its value (`"*"` means "present").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Spanned<String>>,
    /// Annotation key → glob over its value (`"*"` means "present").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, Spanned<String>>,
    /// Kubernetes label key → glob over its value (`"*"` means "present"), over the labels
    /// CRI-O records in `io.kubernetes.cri-o.Labels` (see [`crate::select::Facts`]); no other
    /// engine passes them to the runtime, so elsewhere these conditions never match.
    ///
    /// Trust: these labels are written by whoever may create pods in the namespace (and by the
    /// kubelet), not by the image's builder, so `selectable_by_label = false` does not forbid
    /// them. That flag keeps a policy from being chosen by anyone who can publish an image; pod
    /// labels come from the same principal as the pod's annotations, which such a policy may
    /// already match on. They are no stronger than annotations, though: any tenant of any
    /// namespace can put any label on its pods (label values are not namespaced), admission
    /// rules on labels do not cover CRI-O's JSON record (for the sandbox a pod annotation of the
    /// same name overwrites it), and for application containers the kubelet passes only its
    /// own labels (`io.kubernetes.container.name`, pod name, namespace, uid), so the pod's own
    /// labels reach the sandbox only. A policy that is weaker than the default should therefore
    /// pair them with `kubernetes_namespaces`. The kubelet's namespace label is refused here at
    /// load: `kubernetes_namespaces` reads the engine's own annotation first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kubernetes_labels: BTreeMap<String, Spanned<String>>,
    /// Globs over the Kubernetes namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kubernetes_namespaces: Vec<Spanned<String>>,
    /// Globs over the Kubernetes service account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<Spanned<String>>,
    /// `"sandbox"` (pod sandbox / pause container) or `"container"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_type: Option<ContainerType>,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
            && self.digests.is_empty()
            && self.labels.is_empty()
            && self.annotations.is_empty()
            && self.kubernetes_labels.is_empty()
            && self.kubernetes_namespaces.is_empty()
            && self.service_accounts.is_empty()
            && self.container_type.is_none()
    }
}

/// `[seccomp]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeccompRules {
    /// Syscalls the container may never make, whatever profile the engine supplied.
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
    /// What a denied syscall returns.
    #[serde(default)]
    pub errno: Errno,
    /// Inject ociguard's built-in profile when the bundle has none.
    #[serde(default = "yes")]
    pub inject_default: bool,
}

impl Default for SeccompRules {
    fn default() -> Self {
        SeccompRules {
            deny: Vec::new(),
            errno: Errno::default(),
            inject_default: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// `[process]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessRules {
    /// Capabilities removed from every set (`"ALL"` empties them). Names as in the OCI spec,
    /// `CAP_` prefix optional, case-insensitive; normalised to `CAP_X` at load.
    #[serde(default)]
    pub drop_capabilities: Vec<Spanned<String>>,
    /// Force `process.noNewPrivileges = true` (also on `exec`).
    #[serde(default)]
    pub no_new_privileges: bool,
}

/// `[annotations]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationRules {
    /// Runtime-honoured annotations that weaken isolation and that this policy nevertheless lets
    /// through (exact keys or the listed prefixes, see [`crate::annotations::UNSAFE`]).
    #[serde(default)]
    pub allow_unsafe: Vec<Spanned<String>>,
}

/// Whether a per-container AppArmor profile is generated, compiled, loaded and set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppArmorMode {
    /// No profile from ociguard (the engine's `apparmorProfile`, if any, is kept).
    #[default]
    Off,
    /// Apply a profile where the kernel has AppArmor; elsewhere record that it was unavailable.
    IfAvailable,
    /// Refuse to start the container where AppArmor is not available.
    Required,
}

/// `[apparmor]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppArmorRules {
    #[serde(default)]
    pub mode: AppArmorMode,
    /// Executables (absolute paths or AppArmor globs) the container may not execute.
    #[serde(default)]
    pub deny_exec: Vec<Spanned<String>>,
    /// If non-empty, the only executables the container may run.
    #[serde(default)]
    pub allowed_exec: Vec<Spanned<String>>,
    /// Paths inside the container treated as secrets in addition to those derived from the
    /// mounts (`/run/secrets/**`, Kubernetes secret and service-account token volumes).
    #[serde(default)]
    pub secret_paths: Vec<Spanned<String>>,
    /// Executables allowed to read the secret paths.
    #[serde(default)]
    pub secret_readers: Vec<Spanned<String>>,
}

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
    Loader,
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
            Rule::Loader => "loader",
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
    /// Refuse every shell (see [`DEFAULT_SHELLS`](crate::behavior::DEFAULT_SHELLS), or `shells`).
    #[serde(default)]
    pub deny_shells: bool,
    /// What counts as a shell; default [`DEFAULT_SHELLS`](crate::behavior::DEFAULT_SHELLS).
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
}

/// What an action outside the learned profile does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnAnomaly {
    /// No comparison with the profile.
    #[default]
    Off,
    /// An `anomaly` event naming the identity, the image digest and the profile.
    Report,
    /// Reported, and the process that did it is killed (SIGKILL). An unexpected destination
    /// is refused by the egress allowlist, not by a kill: a packet names no process.
    Kill,
}

impl OnAnomaly {
    pub fn as_str(self) -> &'static str {
        match self {
            OnAnomaly::Off => "off",
            OnAnomaly::Report => "report",
            OnAnomaly::Kill => "kill",
        }
    }
}

/// `[profile]` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRules {
    #[serde(default)]
    pub on_anomaly: OnAnomaly,
}

impl ProfileRules {
    pub fn is_off(&self) -> bool {
        self.on_anomaly == OnAnomaly::Off
    }
}

/// Whether the container's identity must be registered with ociguardd before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityMode {
    /// No identity hooks.
    Off,
    /// Register; if the monitor is down, spool the record and let the container run.
    #[default]
    BestEffort,
    /// The container does not start unless the monitor durably recorded it.
    Required,
}

/// `[identity]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityRules {
    #[serde(default)]
    pub mode: IdentityMode,
}

/// What a container may connect to (see [`crate::egress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EgressMode {
    /// No rules from ociguard.
    #[default]
    Unrestricted,
    /// Loopback only.
    DenyAll,
    /// Loopback, established connections and the `allow` entries.
    Allowlist,
}

/// What a denied packet gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DenyVerdict {
    /// TCP reset / ICMP administratively prohibited: applications fail fast.
    #[default]
    Reject,
    /// Silently dropped: connections time out.
    Drop,
}

/// What to do when an `allow` host name does not resolve at create time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnresolvable {
    /// The container does not start (under `enforce`).
    #[default]
    Fail,
    /// The entry allows nothing; recorded in the decision.
    Skip,
}

/// Transport protocol of an `allow` entry.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Any protocol; with `ports`, TCP and UDP.
    #[default]
    Any,
    Tcp,
    Udp,
}

/// A port (`443`) or an inclusive range (`"8000-8080"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PortSpec {
    Port(i64),
    Range(String),
}

/// One `[[egress.allow]]` entry: a destination by `cidr` (or bare address) or by DNS `host`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Spanned<String>>,
    /// Resolved on the host when the container is created; the addresses are fixed from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Spanned<String>>,
    #[serde(default)]
    pub protocol: Protocol,
    /// Destination ports; none means every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Spanned<PortSpec>>,
}

/// `[egress]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRules {
    #[serde(default)]
    pub mode: EgressMode,
    #[serde(default)]
    pub on_deny: DenyVerdict,
    /// A restricting policy refuses host-network containers (their rules would have to go into
    /// the node's own namespace). `true` lets them start, unrestricted, and records that.
    #[serde(default)]
    pub allow_host_network: bool,
    #[serde(default)]
    pub on_unresolvable: OnUnresolvable,
    #[serde(default)]
    pub allow: Vec<Spanned<AllowEntry>>,
}

impl EgressRules {
    /// Does this policy limit where the container may connect?
    pub fn restricts(&self) -> bool {
        self.mode != EgressMode::Unrestricted
    }

    pub fn is_unrestricted(&self) -> bool {
        *self == EgressRules::default()
    }
}
