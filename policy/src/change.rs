//! What a policy did to a bundle, one [`Change`] at a time: the plain value a decision
//! carries, printed by `ociguardctl explain` and logged by `ociguard create`.
//!
//! Every module that edits a `config.json` ([`crate::rewrite`], [`crate::egress`], and the
//! shim's AppArmor, identity and behavior steps) reports in these terms, so this module sits
//! below all of them and depends on nothing but the policy model.

use serde::Serialize;

/// One thing a policy did (or, in audit mode, would have done).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The bundle had no seccomp profile; ociguard's built-in one was injected.
    SeccompInjected {
        default_action: String,
    },
    /// The profile was narrowed: `denied` are newly denied (or logged, in audit mode).
    SeccompNarrowed {
        action: String,
        denied: Vec<String>,
        already_denied: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        not_audited: Vec<String>,
    },
    CapabilitiesDropped {
        capabilities: Vec<String>,
        applied: bool,
    },
    /// The spec listed no capabilities; the runc default minus the dropped ones was written.
    CapabilitiesDefaulted {
        capabilities: Vec<String>,
    },
    NoNewPrivileges {
        applied: bool,
    },
    AnnotationStripped {
        key: String,
        applied: bool,
    },
    /// An unsafe annotation the policy allows by name.
    AnnotationAllowed {
        key: String,
    },
    /// `ociguard-hook` is in `hooks` (createRuntime, poststart, poststop): the container's
    /// identity is registered with ociguardd (see [`crate::identity`]).
    IdentityHooks {
        mode: crate::model::IdentityMode,
        hook: String,
    },
    /// Best-effort identity, but the hooks could not be added (e.g. `ociguard-hook` is not
    /// installed, and crun would fail to start a container whose hook is missing): the
    /// container runs unregistered.
    IdentityHooksSkipped {
        mode: crate::model::IdentityMode,
        reason: String,
    },
    /// `[behavior]`: the rules ociguardd's guard holds from createRuntime on (carried in the
    /// `org.ociguard.behavior` annotation); `not_held` names what no enforcer here can hold.
    Behavior {
        enforcer: String,
        rules: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        not_held: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        noexec: Vec<String>,
    },
    /// `[egress]`: `ociguard-hook egress` installs the ruleset with this digest in the
    /// container's network namespace at createRuntime (see [`crate::egress`]).
    Egress {
        mode: crate::model::EgressMode,
        on_deny: crate::model::DenyVerdict,
        ruleset_digest: String,
        rules: usize,
        networks: usize,
        hook: String,
        applied: bool,
    },
    /// Host names of `egress.allow`, resolved on the host at create time.
    EgressHostsResolved {
        resolved: std::collections::BTreeMap<String, Vec<String>>,
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        unresolved: std::collections::BTreeMap<String, String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        resolvers: Vec<String>,
    },
    /// The container had no network namespace (host network) and `deny-all` gave it a new,
    /// empty one.
    NetworkNamespaceInjected {
        applied: bool,
    },
    /// The policy restricts egress but no rules are installed, and why.
    EgressNotEnforced {
        reason: String,
    },
    /// The image's `io.containers.seccomp.profile` label denied these on top of the policy.
    ImageSeccompNarrowed {
        denied: Vec<String>,
    },
    /// The image's seccomp label was not used (it can only narrow; ignoring it loosens nothing).
    ImageSeccompIgnored {
        reason: String,
    },
    /// A profile generated from the policy and the bundle (see [`crate::apparmor`]) was loaded
    /// and set as `process.apparmorProfile`; `applied: false` in audit mode (rendered only).
    #[serde(rename = "apparmor_profile")]
    AppArmorProfile {
        name: String,
        digest: String,
        applied: bool,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        secrets: Vec<String>,
        /// The engine's own `apparmorProfile`, overridden.
        #[serde(skip_serializing_if = "Option::is_none")]
        replaced: Option<String>,
    },
    /// The policy asks for AppArmor where available and this host has none: no profile set.
    #[serde(rename = "apparmor_unavailable")]
    AppArmorUnavailable {
        reason: String,
    },
}
