//! ociguard's policy library: the policy model and its files, choosing a policy for a container,
//! and the edits a policy makes to an OCI bundle's `config.json` (seccomp, capabilities,
//! no-new-privileges, unsafe annotations).
//!
//! It owns decisions, never side effects: nothing here execs a runtime, writes a bundle or
//! talks to a daemon. Everything is a function of its inputs so it can be unit-tested and
//! printed by `ociguardctl explain`.

pub mod annotations;
pub mod apparmor;
pub mod behavior;
pub mod capabilities;
pub mod change;
pub mod config;
pub mod decision;
pub mod digest;
pub mod egress;
pub mod excerpt;
pub mod generate;
pub mod identity;
pub mod image_seccomp;
pub mod kubernetes;
pub mod load;
pub mod location;
pub mod model;
pub mod oci_hooks;
pub mod profile;
pub mod rewrite;
pub mod seccomp;
#[cfg(feature = "bpf")]
pub mod seccomp_bpf;
pub mod select;
pub mod set;
pub mod spec;
pub mod trust;

pub use config::RuntimeConfig;
pub use decision::{decide, Decision, Rewritten};
pub use model::{Mode, Policy};
pub use set::{LoadedPolicy, PolicySet};
