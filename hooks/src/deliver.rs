//! Getting a report to the monitor, or into the spool when the monitor cannot take it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ociguard_monitor::client;
use ociguard_monitor::protocol::Request;
use ociguard_monitor::spool;

/// Where a report ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The monitor acknowledged it durably (`seq` absent: it already had it).
    Recorded { seq: Option<u64> },
    /// The monitor could not take it (`because`); it waits in the spool.
    Spooled { path: PathBuf, because: String },
    /// Neither the monitor nor the spool could take it.
    Lost { because: String },
}

/// Send `req` to the monitor at `socket`; the error says why it is not durably recorded.
pub fn send(req: &Request, socket: &Path, timeout: Duration) -> Result<Option<u64>, String> {
    match client::request(socket, req, timeout) {
        Ok(r) if r.ok && r.durable == Some(true) => Ok(r.seq),
        Ok(r) if r.ok => Err(format!(
            "monitor {} answered without confirming durability",
            socket.display()
        )),
        Ok(r) => Err(format!(
            "monitor {}: {}",
            socket.display(),
            r.error.as_deref().unwrap_or("refused without a reason")
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Send, and on failure spool (when `spool_dir` is given).
pub fn deliver(
    req: &Request,
    socket: &Path,
    spool_dir: Option<&Path>,
    timeout: Duration,
) -> Result<Delivered, String> {
    let because = match send(req, socket, timeout) {
        Ok(seq) => return Ok(Delivered::Recorded { seq }),
        Err(e) => e,
    };
    let Some(dir) = spool_dir else {
        return Err(because);
    };
    Ok(match spool::write(dir, req) {
        Ok(path) => Delivered::Spooled { path, because },
        Err(e) => Delivered::Lost {
            because: format!("{because}; and {e}"),
        },
    })
}
