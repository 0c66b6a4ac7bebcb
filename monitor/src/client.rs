//! A client for the monitor socket: `ociguard-hook`, `ociguardctl`, tests and the benchmark.

use std::io::{BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

use crate::protocol::{read_frame, FrameError, Request, Response, MAX_RESPONSE};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to monitor {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("send to monitor {path}: {source}")]
    Send {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("receive from monitor {path}: {source}")]
    Receive { path: PathBuf, source: FrameError },
    #[error("monitor {path} closed the connection without answering")]
    Closed { path: PathBuf },
    #[error("monitor {path} answered something that is not a response: {source}")]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The monitor is not there at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }
}

#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

/// `connect(2)` that gives up after `timeout`: a Unix socket whose listen queue is full would
/// otherwise block forever, and a hook must fail (or spool) in bounded time.
fn connect_within(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    let addr = UnixAddr::new(path).map_err(std::io::Error::from)?;
    let deadline = Instant::now() + timeout;
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(std::io::Error::from)?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => {
                let s = UnixStream::from(fd);
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(Errno::EAGAIN) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "listen queue full (monitor not accepting connections)",
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Client {
    /// Connect; every later read and write gives up after `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let cerr = |source| ClientError::Connect {
            path: path.to_owned(),
            source,
        };
        let stream = connect_within(path, timeout).map_err(cerr)?;
        stream.set_read_timeout(Some(timeout)).map_err(cerr)?;
        stream.set_write_timeout(Some(timeout)).map_err(cerr)?;
        let reader = BufReader::new(stream.try_clone().map_err(cerr)?);
        Ok(Client {
            path: path.to_owned(),
            writer: stream,
            reader,
        })
    }

    /// `None`: wait forever (for `events --follow`).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.writer.set_read_timeout(timeout)
    }

    pub fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Decode {
            path: self.path.clone(),
            source: e,
        })?;
        line.push(b'\n');
        self.send_raw(&line)
    }

    /// Send bytes as they are (tests of malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer
            .write_all(bytes)
            .map_err(|source| ClientError::Send {
                path: self.path.clone(),
                source,
            })
    }

    /// The next answer line; `None` when the monitor closed the connection.
    pub fn receive(&mut self) -> Result<Option<Response>, ClientError> {
        let line =
            read_frame(&mut self.reader, MAX_RESPONSE).map_err(|source| ClientError::Receive {
                path: self.path.clone(),
                source,
            })?;
        let Some(line) = line else {
            return Ok(None);
        };
        serde_json::from_slice(&line)
            .map(Some)
            .map_err(|source| ClientError::Decode {
                path: self.path.clone(),
                source,
            })
    }

    pub fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        self.send(req)?;
        self.receive()?.ok_or_else(|| ClientError::Closed {
            path: self.path.clone(),
        })
    }
}

/// One request on a fresh connection.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    Client::connect(path, timeout)?.request(req)
}
