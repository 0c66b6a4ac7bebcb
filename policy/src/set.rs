//! The validated policies ociguard chooses from: one [`LoadedPolicy`] per file, and the
//! [`PolicySet`] of a directory with its default.
//!
//! Plain values below every module that reads a policy: loading them from files is
//! [`crate::load`], choosing one for a container is [`crate::select`].

use std::path::PathBuf;

use oci_spec::runtime::Capability;
use toml::Spanned;

use crate::digest;
use crate::model::{Mode, Policy, DEFAULT_POLICY};

/// A validated policy with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedPolicy {
    pub policy: Policy,
    /// `None` for the built-in default.
    pub source: Option<PathBuf>,
    /// `sha256:<hex>` over the canonical bytes (see [`crate::digest`]).
    pub digest: String,
    /// Capabilities to drop, parsed; `None` in the list position means "ALL".
    pub drop_all_capabilities: bool,
    pub drop_capabilities: Vec<Capability>,
}

impl LoadedPolicy {
    pub fn name(&self) -> &str {
        self.policy.name.get_ref()
    }
    pub fn source_display(&self) -> String {
        self.source
            .as_ref()
            .map_or_else(|| "built-in".to_owned(), |p| p.display().to_string())
    }
}

/// All policies of a directory.
#[derive(Debug, Clone)]
pub struct PolicySet {
    /// Sorted by file name; the default policy is not in here.
    pub policies: Vec<LoadedPolicy>,
    /// The directory's `default` policy, or the built-in one ([`builtin_default`]).
    pub default: LoadedPolicy,
}

impl PolicySet {
    /// The policy a decision names (name and digest must both match).
    pub fn get(&self, name: &str, digest: &str) -> Option<&LoadedPolicy> {
        self.iter().find(|p| p.name() == name && p.digest == digest)
    }

    /// Every policy, the default last.
    pub fn iter(&self) -> impl Iterator<Item = &LoadedPolicy> {
        self.policies.iter().chain(std::iter::once(&self.default))
    }
}

impl Default for PolicySet {
    fn default() -> Self {
        PolicySet {
            policies: Vec::new(),
            default: builtin_default(),
        }
    }
}

/// The built-in default: enforce, inject the built-in seccomp profile when the engine gave none,
/// nothing else (it must not break ordinary workloads on a fresh install).
pub fn builtin_default() -> LoadedPolicy {
    let policy = Policy {
        name: Spanned::new(0..0, DEFAULT_POLICY.to_owned()),
        mode: Mode::Enforce,
        priority: 0,
        selectable_by_label: true,
        labels: Default::default(),
        decision_log: Default::default(),
        selector: Default::default(),
        seccomp: Default::default(),
        process: Default::default(),
        annotations: Default::default(),
        apparmor: Default::default(),
        behavior: Default::default(),
        profile: Default::default(),
        identity: Default::default(),
        egress: Default::default(),
    };
    let digest = digest::policy_digest(&policy);
    LoadedPolicy {
        policy,
        source: None,
        digest,
        drop_all_capabilities: false,
        drop_capabilities: Vec::new(),
    }
}
