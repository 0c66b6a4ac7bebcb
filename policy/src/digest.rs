//! Content digests: `sha256:<hex>` over canonical bytes.
//!
//! A policy's canonical bytes are the compact JSON of its validated model (fields in declaration
//! order, maps sorted, names normalised), prefixed by the format version. Comments, whitespace and
//! key order in the TOML therefore do not change the digest; any change of meaning does.

use sha2::{Digest, Sha256};

use crate::model::Policy;

const POLICY_FORMAT: &str = "ociguard.policy/v1";

pub fn sha256(bytes: &[u8]) -> String {
    prefixed(&Sha256::digest(bytes))
}

/// `sha256:<hex>` of a finished hash (for digests hashed incrementally).
pub fn prefixed(hash: &[u8]) -> String {
    let mut out = String::with_capacity(7 + 2 * hash.len());
    out.push_str("sha256:");
    for b in hash {
        use std::fmt::Write;
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

pub fn canonical_policy_bytes(policy: &Policy) -> Vec<u8> {
    // Serialising plain structs, strings and BTreeMaps to JSON cannot fail; an empty Vec would
    // still give a stable (if useless) digest rather than a panic on the create path.
    serde_json::to_vec(&(POLICY_FORMAT, policy)).unwrap_or_default()
}

pub fn policy_digest(policy: &Policy) -> String {
    sha256(&canonical_policy_bytes(policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        assert_eq!(
            sha256(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
