//! `ociguard-hook`: the OCI hook ociguard injects at `createRuntime`, `poststart` and
//! `poststop` to register a container's identity with ociguardd.
//!
//! It reads the OCI state from stdin, the bundle's `config.json` and the init process's `/proc`
//! entries, and sends one `register` request. If the monitor cannot take it: under
//! `--identity required` at `createRuntime` the hook fails, so crun aborts the create and the
//! container never runs; otherwise the report goes to the spool and the container runs.
//!
//! It must never trust its environment (crun gives it only the `env` of its hook entry) and
//! never block for long: every socket operation has a timeout well inside the hook's own.

pub mod collect;
pub mod deliver;
pub mod egress;
pub mod enginelog;
pub mod kubernetes;
pub mod nfnl;
pub mod state;

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use ociguard_monitor::protocol::{Lifecycle, Request};
use ociguard_monitor::record::Timestamp;
use ociguard_policy::identity::HookEvent;
use ociguard_policy::model::IdentityMode;

pub use deliver::Delivered;

#[derive(Debug, Clone)]
pub struct HookArgs {
    pub event: HookEvent,
    pub identity: IdentityMode,
    pub socket: PathBuf,
    pub spool: PathBuf,
    /// For each of connect, send and the durable acknowledgement.
    pub timeout: Duration,
}

/// What happened to the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub id: Option<String>,
    pub delivered: Delivered,
    /// Facts that could not be read (logged, not fatal).
    pub warnings: Vec<String>,
}

/// The container must not start: its identity is required and was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(
        "identity is required but the container cannot be identified: {0}; refusing to start it"
    )]
    State(#[from] state::StateError),
    #[error("identity of container {id} is required{policy} but incomplete: {reason}; refusing to start it")]
    Incomplete {
        id: String,
        policy: String,
        reason: String,
    },
    #[error("identity of container {id} is required{policy} but was not recorded: {reason}; refusing to start it")]
    NotRecorded {
        id: String,
        policy: String,
        reason: String,
    },
}

pub fn lifecycle(event: HookEvent) -> Lifecycle {
    match event {
        HookEvent::CreateRuntime => Lifecycle::Created,
        HookEvent::Poststart => Lifecycle::Started,
        HookEvent::Poststop => Lifecycle::Exited,
    }
}

/// Handle one hook invocation with the OCI state on `input`.
pub fn run(args: &HookArgs, input: &mut impl Read) -> Result<Report, HookError> {
    // Only createRuntime can keep a container from starting; later hooks always spool.
    let must = args.event == HookEvent::CreateRuntime && args.identity == IdentityMode::Required;
    let state = match state::read(input) {
        Ok(s) => s,
        Err(e) if must => return Err(e.into()),
        Err(e) => {
            return Ok(Report {
                id: None,
                delivered: Delivered::Lost {
                    because: e.to_string(),
                },
                warnings: Vec::new(),
            })
        }
    };
    let collected = collect::collect(&state, args.event, Timestamp::now());
    let policy = collected
        .identity
        .policy
        .as_ref()
        .map(|p| format!(" by policy {:?}", p.name))
        .unwrap_or_default();
    if must && collected.identity.start_time.is_none() {
        return Err(HookError::Incomplete {
            id: state.id,
            policy,
            reason: collected.warnings.join("; "),
        });
    }
    let req = Request::Register {
        event: lifecycle(args.event),
        identity: collected.identity,
    };
    let spool = (!must).then_some(args.spool.as_path());
    match deliver::deliver(&req, &args.socket, spool, args.timeout) {
        Ok(delivered) => Ok(Report {
            id: Some(state.id),
            delivered,
            warnings: collected.warnings,
        }),
        Err(reason) => Err(HookError::NotRecorded {
            id: state.id,
            policy,
            reason,
        }),
    }
}
