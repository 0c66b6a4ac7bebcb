//! The OCI state document a runtime writes to a hook's stdin.
//!
//! Validated against oci-spec's `State` type first (wrong types are rejected), then for what the
//! identity needs: a non-empty id, an absolute bundle path and, where the process must exist,
//! a pid. The input is bounded: a hook never buffers more than [`MAX_STATE`] bytes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

/// Largest state document accepted (crun's are a few hundred bytes plus annotations).
pub const MAX_STATE: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("read OCI state from stdin: {0}")]
    Read(std::io::Error),
    #[error("OCI state on stdin is larger than {MAX_STATE} bytes")]
    TooLarge,
    #[error("OCI state on stdin is not valid: {0}")]
    Invalid(serde_json::Error),
    #[error("OCI state on stdin: {0}")]
    Missing(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookState {
    pub id: String,
    pub bundle: PathBuf,
    pub pid: Option<u32>,
    pub status: String,
    pub annotations: BTreeMap<String, String>,
}

/// Read (bounded) and validate the state document.
pub fn read(input: &mut impl Read) -> Result<HookState, StateError> {
    let mut bytes = Vec::new();
    input
        .take(MAX_STATE + 1)
        .read_to_end(&mut bytes)
        .map_err(StateError::Read)?;
    if bytes.len() as u64 > MAX_STATE {
        return Err(StateError::TooLarge);
    }
    parse(&bytes)
}

pub fn parse(bytes: &[u8]) -> Result<HookState, StateError> {
    let state: oci_spec::runtime::State =
        serde_json::from_slice(bytes).map_err(StateError::Invalid)?;
    if state.id().is_empty() {
        return Err(StateError::Missing("\"id\" is missing or empty"));
    }
    if !state.bundle().is_absolute() {
        return Err(StateError::Missing(
            "\"bundle\" is missing or not an absolute path",
        ));
    }
    let pid = match state.pid() {
        Some(p) if *p > 0 => Some(u32::try_from(*p).map_err(|_| StateError::Missing("bad pid"))?),
        Some(0) | None => None,
        Some(_) => return Err(StateError::Missing("\"pid\" is negative")),
    };
    Ok(HookState {
        id: state.id().clone(),
        bundle: state.bundle().clone(),
        pid,
        status: state.status().to_string(),
        annotations: state
            .annotations()
            .as_ref()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid() {
        let s = parse(br#"{"ociVersion":"1.0.0","id":"c1","pid":42,"status":"created","bundle":"/b","annotations":{"a":"b"}}"#).unwrap();
        assert_eq!((s.id.as_str(), s.pid), ("c1", Some(42)));
        assert_eq!(s.annotations["a"], "b");
        for bad in [
            &b"{"[..],
            br#"{"id":"c1","pid":"x","bundle":"/b"}"#,
            br#"{"pid":1,"bundle":"/b"}"#,
            br#"{"id":"c","pid":1,"bundle":"rel"}"#,
            br#"{"id":"c","pid":-4,"bundle":"/b"}"#,
            br#"[1,2]"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let big = vec![b' '; (MAX_STATE + 10) as usize];
        assert!(matches!(read(&mut &big[..]), Err(StateError::TooLarge)));
        // poststop: the process is gone, no pid is fine
        assert_eq!(
            parse(br#"{"id":"c","status":"stopped","bundle":"/b"}"#)
                .unwrap()
                .pid,
            None
        );
    }
}
