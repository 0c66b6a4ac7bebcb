//! ociguardd, the node monitor: the durable record of which live process belongs to which
//! container, image and policy, and the socket that answers "who is calling me?".
//!
//! It owns the identity records (`record`), their journal (`journal`), the spool that hooks
//! fall back to (`spool`), the wire protocol and its client (`protocol`, `client`), the daemon
//! itself (`daemon`, `server`, `writer`, `exitwatch`), and the egress denial events it reads from
//! each container's network namespace (`nflog`); for `ociguard create` it keeps containerd's
//! container → image mapping warm (`containerd`). It never changes a container or a bundle and
//! never execs anything: it only records and answers. Nothing it is told by a peer decides what
//! that peer may do; only the kernel's credentials for the socket do.

#[cfg(feature = "daemon")]
pub mod bpf;
pub mod client;
#[cfg(feature = "containerd")]
pub mod containerd;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod decisions;
pub mod events;
pub mod exitwatch;
pub mod export;
#[cfg(feature = "daemon")]
pub mod export_syslog;
#[cfg(feature = "daemon")]
pub mod guard;
pub mod imagemap;
pub mod journal;
pub mod logger;
#[cfg(feature = "daemon")]
pub mod metrics;
pub mod nflog;
pub mod procfs;
pub mod profiles;
pub mod protocol;
pub mod record;
#[cfg(feature = "daemon")]
pub mod server;
pub mod spool;
pub mod stats;
pub mod store;
mod sys;

pub use sys::{limit_malloc_arenas, trim_heap};
pub mod writer;

pub use client::{Client, ClientError};
pub use protocol::{Event, EventKind, Lifecycle, Request, Response};
pub use record::{Exit, ExitSource, Identity, Key, Status, Timestamp};
