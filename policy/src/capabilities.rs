//! Edits of `process.capabilities` (the five capability sets of the OCI spec).

use oci_spec::runtime::Capability;
use serde_json::{Map, Value};

/// The sets of an OCI `process.capabilities` object.
pub const SETS: [&str; 5] = [
    "bounding",
    "effective",
    "inheritable",
    "permitted",
    "ambient",
];

/// runc's `spec` default, used when a policy drops capabilities from a spec that lists none
/// (an absent object would otherwise leave the runtime's own, possibly larger, default in place).
pub const SPEC_DEFAULT: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// `CAP_X` spelling of a capability (oci-spec's serde name).
pub fn capability_name(c: Capability) -> String {
    match serde_json::to_value(c) {
        Ok(serde_json::Value::String(s)) => s,
        // oci-spec serialises every variant as a string; keep a readable fallback regardless.
        _ => format!("CAP_{c}"),
    }
}

/// `cap_net_raw`, `NET_RAW` → `CAP_NET_RAW` for comparison.
pub fn normalize(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// Remove `drop` (already `CAP_X` spelled) from every set present; `all` empties them.
/// Returns the capabilities that were actually present and removed, sorted.
pub fn drop_from(caps: &mut Map<String, Value>, drop: &[String], all: bool) -> Vec<String> {
    let mut removed = Vec::new();
    for set in SETS {
        let Some(Value::Array(list)) = caps.get_mut(set) else {
            continue;
        };
        list.retain(|v| {
            let keep = match v.as_str() {
                Some(name) => !all && !drop.iter().any(|d| *d == normalize(name)),
                // Not a string: the typed validation rejects such a spec before we get here.
                None => true,
            };
            if !keep {
                if let Some(name) = v.as_str() {
                    removed.push(normalize(name));
                }
            }
            keep
        });
    }
    removed.sort();
    removed.dedup();
    removed
}

/// A fresh capabilities object: [`SPEC_DEFAULT`] minus `drop`, in the permitted sets only.
pub fn default_minus(drop: &[String], all: bool) -> Map<String, Value> {
    let keep: Vec<Value> = SPEC_DEFAULT
        .iter()
        .filter(|c| !all && !drop.iter().any(|d| d == *c))
        .map(|c| Value::String((*c).to_owned()))
        .collect();
    let mut caps = Map::new();
    for set in ["bounding", "effective", "permitted"] {
        caps.insert(set.to_owned(), Value::Array(keep.clone()));
    }
    caps
}

/// For `exec`: keep only capabilities that `allowed` (the container's own, policy-applied sets)
/// has in the same set, so an exec'd process can never hold more than the container's init.
/// A set absent from `allowed` allows nothing. Returns what was removed, sorted.
pub fn restrict_to(caps: &mut Map<String, Value>, allowed: &Map<String, Value>) -> Vec<String> {
    let mut removed = Vec::new();
    for set in SETS {
        let Some(Value::Array(list)) = caps.get_mut(set) else {
            continue;
        };
        let allowed_set: Vec<String> = match allowed.get(set) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(normalize).collect(),
            _ => Vec::new(),
        };
        list.retain(|v| {
            let name = v.as_str().map(normalize);
            let keep = name.as_ref().is_some_and(|n| allowed_set.contains(n));
            if !keep {
                removed.push(name.unwrap_or_else(|| v.to_string()));
            }
            keep
        });
    }
    removed.sort();
    removed.dedup();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn drop_named_and_all() {
        let mut c = obj(
            json!({"bounding": ["CAP_NET_RAW", "CAP_CHOWN"], "effective": ["cap_net_raw"], "ambient": []}),
        );
        let removed = drop_from(&mut c, &["CAP_NET_RAW".into()], false);
        assert_eq!(removed, vec!["CAP_NET_RAW"]);
        assert_eq!(
            Value::Object(c.clone()),
            json!({"bounding": ["CAP_CHOWN"], "effective": [], "ambient": []})
        );
        // idempotent
        assert!(drop_from(&mut c, &["CAP_NET_RAW".into()], false).is_empty());
        let removed = drop_from(&mut c, &[], true);
        assert_eq!(removed, vec!["CAP_CHOWN"]);
    }

    #[test]
    fn restrict_exec_caps() {
        let allowed = obj(json!({"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"]}));
        let mut c = obj(
            json!({"bounding": ["CAP_CHOWN", "CAP_SYS_ADMIN"], "effective": ["CAP_SYS_ADMIN"], "permitted": ["CAP_CHOWN"]}),
        );
        let removed = restrict_to(&mut c, &allowed);
        assert_eq!(removed, vec!["CAP_CHOWN", "CAP_SYS_ADMIN"]);
        assert_eq!(
            Value::Object(c),
            json!({"bounding": ["CAP_CHOWN"], "effective": [], "permitted": []})
        );
    }

    #[test]
    fn defaults() {
        let c = default_minus(&["CAP_KILL".into()], false);
        assert_eq!(
            c["bounding"],
            json!(["CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE"])
        );
        assert_eq!(default_minus(&[], true)["permitted"], json!([]));
    }
}
