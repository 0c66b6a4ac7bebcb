//! The Kubernetes service account of a container, from its projected token.
//!
//! CRI does not pass the service account to the runtime, but the kubelet mounts the account's
//! token at `/var/run/secrets/kubernetes.io/serviceaccount` from a host directory it owns. The
//! token is a JWT whose payload names the account (`kubernetes.io.serviceaccount.name`, or the
//! `sub` claim `system:serviceaccount:<ns>:<name>`). Only the payload is decoded; the token is
//! never logged or stored.

use std::path::Path;

use base64::Engine as _;
use serde_json::Value;

const TOKEN_DIRS: &[&str] = &[
    "/var/run/secrets/kubernetes.io/serviceaccount",
    "/run/secrets/kubernetes.io/serviceaccount",
];

/// The service account name, if the spec mounts a readable token.
pub fn from_spec(spec: &Value) -> Option<String> {
    let mounts = spec.get("mounts")?.as_array()?;
    let source = mounts.iter().find_map(|m| {
        let dest = m.get("destination")?.as_str()?;
        if TOKEN_DIRS.contains(&dest.trim_end_matches('/')) {
            m.get("source")?.as_str()
        } else {
            None
        }
    })?;
    let token = std::fs::read_to_string(Path::new(source).join("token")).ok()?;
    from_token(token.trim())
}

/// The account named by a JWT's payload.
pub fn from_token(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    if let Some(name) = claims
        .pointer("/kubernetes.io/serviceaccount/name")
        .and_then(Value::as_str)
    {
        return Some(name.to_owned());
    }
    claims
        .get("sub")?
        .as_str()?
        .strip_prefix("system:serviceaccount:")?
        .split(':')
        .nth(1)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode("{\"alg\":\"RS256\"}"),
            e.encode(claims)
        )
    }

    #[test]
    fn names_from_tokens() {
        assert_eq!(
            from_token(&jwt(
                r#"{"kubernetes.io":{"serviceaccount":{"name":"billing"}}}"#
            ))
            .as_deref(),
            Some("billing")
        );
        assert_eq!(
            from_token(&jwt(r#"{"sub":"system:serviceaccount:pay:api"}"#)).as_deref(),
            Some("api")
        );
        assert_eq!(from_token("garbage"), None);
    }

    #[test]
    fn from_mounted_token() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("token"),
            jwt(r#"{"sub":"system:serviceaccount:ns:sa1"}"#),
        )
        .unwrap();
        let spec = serde_json::json!({"mounts": [{"destination": "/var/run/secrets/kubernetes.io/serviceaccount", "source": d.path()}]});
        assert_eq!(from_spec(&spec).as_deref(), Some("sa1"));
    }
}
