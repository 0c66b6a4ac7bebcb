//! Send an nf_tables batch ([`ociguard_policy::egress::netlink::Batch`]) on a `NETLINK_NETFILTER`
//! socket in the current network namespace and wait for the kernel's verdict on every message.
//!
//! The kernel applies the batch as one transaction. It answers each message that asked for an
//! acknowledgement; if any message fails, the whole batch is aborted and that message's answer
//! carries the error (with the kernel's extended-ack text when it gives one).

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NlaBuffer, NlasIterator, NLMSG_ERROR, NLM_F_ACK_TLVS,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use ociguard_policy::egress::netlink::Batch;

/// The kernel's answers must come within this (a stuck kernel must not hang `create`).
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// `NLMSGERR_ATTR_MSG`: the extended ack's text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// A netlink header: what an error echoes of the request (`NETLINK_CAP_ACK`).
const REQUEST_HEADER: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum NfnlError {
    #[error("netlink socket: {0}")]
    Socket(io::Error),
    #[error("send the batch ({bytes} bytes): {source}")]
    Send { bytes: usize, source: io::Error },
    #[error("the kernel rejected the {what}: {source}{}", .detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Rejected {
        what: String,
        source: io::Error,
        detail: Option<String>,
    },
    #[error("no answer from the kernel for {missing} of {total} messages within {TIMEOUT:?}")]
    Timeout { missing: usize, total: usize },
    #[error("receive the kernel's answer: {0}")]
    Receive(io::Error),
}

/// Send `batch` and return once every message is acknowledged (the transaction committed).
pub fn apply(batch: &Batch) -> Result<(), NfnlError> {
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NfnlError::Socket)?;
    sock.bind_auto().map_err(NfnlError::Socket)?;
    // Errors carry only the failing request's header, not the whole (possibly large) request.
    sock.set_cap_ack(true).map_err(NfnlError::Socket)?;
    // Best effort: the kernel's explanation of an error.
    let _ = sock.set_ext_ack(true);
    let fd = sock.as_fd();
    let timeout = TimeVal::new(i64::try_from(TIMEOUT.as_secs()).unwrap_or(5), 0);
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).map_err(|e| NfnlError::Socket(e.into()))?;
    // The kernel takes a batch only whole, in one send: make room for large ones (thousands of
    // set elements), as nft does.
    let need = batch.bytes.len() + 4096;
    if need > 200 * 1024 {
        setsockopt(&fd, sockopt::SndBufForce, &need).map_err(|e| NfnlError::Socket(e.into()))?;
        let _ = setsockopt(&fd, sockopt::RcvBufForce, &(need / 4).max(256 * 1024));
    }
    let sent = sock
        .send(&batch.bytes, 0)
        .map_err(|source| NfnlError::Send {
            bytes: batch.bytes.len(),
            source,
        })?;
    if sent != batch.bytes.len() {
        return Err(NfnlError::Send {
            bytes: batch.bytes.len(),
            source: io::Error::new(io::ErrorKind::WriteZero, format!("only {sent} bytes sent")),
        });
    }
    let total = batch.acks.len();
    let mut acked = vec![false; total];
    let mut missing = total;
    let mut buf = vec![0u8; 64 * 1024];
    while missing > 0 {
        let n = match sock.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(NfnlError::Timeout { missing, total });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(NfnlError::Receive(e)),
        };
        for answer in answers(&buf[..n]) {
            let Some(slot) = usize::try_from(answer.seq)
                .ok()
                .and_then(|s| s.checked_sub(1))
                .and_then(|i| acked.get_mut(i))
            else {
                continue;
            };
            if answer.errno != 0 {
                return Err(NfnlError::Rejected {
                    what: batch.what(answer.seq).unwrap_or("batch").to_owned(),
                    source: io::Error::from_raw_os_error(answer.errno),
                    detail: answer.detail,
                });
            }
            if !*slot {
                *slot = true;
                missing -= 1;
            }
        }
    }
    Ok(())
}

/// One `NLMSG_ERROR` answer: the request's sequence number, errno (0 = acknowledged), and the
/// extended ack's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub seq: u32,
    pub errno: i32,
    pub detail: Option<String>,
}

/// The `NLMSG_ERROR` messages in one datagram (others are skipped; a malformed tail ends it).
pub fn answers(datagram: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while let Ok(msg) = NetlinkBuffer::new_checked(rest) {
        let len = msg.length() as usize;
        if msg.message_type() == NLMSG_ERROR {
            if let Ok(err) = ErrorBuffer::new_checked(msg.payload()) {
                // The error's payload starts with the request's header (only the header: the
                // length field in it still counts the whole request, so no checked parse).
                if err.payload().len() >= REQUEST_HEADER {
                    let request = NetlinkBuffer::new(err.payload());
                    let detail = (msg.flags() & NLM_F_ACK_TLVS != 0)
                        .then(|| err.payload().get(REQUEST_HEADER..))
                        .flatten()
                        .and_then(ext_ack_text);
                    out.push(Answer {
                        seq: request.sequence_number(),
                        errno: err.code().map_or(0, |c| c.get().saturating_neg()),
                        detail,
                    });
                }
            }
        }
        let next = (len + 3) & !3;
        match rest.get(next..) {
            Some(r) if next > 0 => rest = r,
            _ => break,
        }
    }
    out
}

fn ext_ack_text(attrs: &[u8]) -> Option<String> {
    NlasIterator::new(attrs)
        .filter_map(Result::ok)
        .find(|nla: &NlaBuffer<&[u8]>| nla.kind() == NLMSGERR_ATTR_MSG)
        .map(|nla| {
            let v = nla.value();
            let v = v.split(|b| *b == 0).next().unwrap_or(v);
            String::from_utf8_lossy(v).into_owned()
        })
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_message(seq: u32, code: i32, ext: Option<&str>) -> Vec<u8> {
        let mut attrs = Vec::new();
        if let Some(text) = ext {
            let len = 4 + text.len() + 1;
            attrs.extend_from_slice(&(len as u16).to_ne_bytes());
            attrs.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
            attrs.extend_from_slice(text.as_bytes());
            attrs.push(0);
            while attrs.len() % 4 != 0 {
                attrs.push(0);
            }
        }
        let len = REQUEST_HEADER + 4 + REQUEST_HEADER + attrs.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        let flags: u16 = if ext.is_some() { NLM_F_ACK_TLVS } else { 0 };
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        // the request's header: len, type, flags, seq, pid
        m.extend_from_slice(&20u32.to_ne_bytes());
        m.extend_from_slice(&0x0a06u16.to_ne_bytes());
        m.extend_from_slice(&5u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn acks_errors_and_extended_text() {
        let mut d = error_message(1, 0, None);
        d.extend(error_message(2, -2, Some("Could not process rule")));
        let a = answers(&d);
        assert_eq!(
            a,
            vec![
                Answer {
                    seq: 1,
                    errno: 0,
                    detail: None
                },
                Answer {
                    seq: 2,
                    errno: 2,
                    detail: Some("Could not process rule".into())
                },
            ]
        );
    }

    /// Run `f` on a thread in a new, empty network namespace (root only).
    fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skip: needs root for a network namespace");
            return None;
        }
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .ok()
    }

    #[test]
    fn the_kernel_takes_the_batch_whole_and_again() {
        use ociguard_policy::egress::{netlink, Accept, Program};
        use ociguard_policy::model::{DenyVerdict, Protocol};
        let program = Program {
            enforce: true,
            on_deny: DenyVerdict::Drop,
            nflog_group: 7,
            accepts: vec![Accept {
                v6: false,
                nets: vec![
                    "198.18.0.0/24".parse().unwrap(),
                    "198.18.9.9/32".parse().unwrap(),
                ],
                protocol: Protocol::Tcp,
                ports: vec![(443, 443), (8000, 8080)],
                dns: false,
            }],
            // The observing rule of `learn` policies goes through the same batch.
            observe: true,
            restricts: true,
        };
        let Some(listing) = in_new_netns(move || {
            let batch = netlink::batch(&program);
            apply(&batch).unwrap();
            // A retried create: the same batch replaces the rules in place.
            apply(&batch).unwrap();
            let out = std::process::Command::new("nft")
                .args(["list", "table", "inet", "ociguard"])
                .output();
            out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        }) else {
            return;
        };
        let Ok(listing) = listing else {
            eprintln!("skip: nft not installed to read the table back");
            return;
        };
        assert_eq!(listing.matches("accept").count(), 4, "{listing}");
        assert!(
            listing.contains(
                "ip daddr { 198.18.0.0/24, 198.18.9.9 } tcp dport { 443, 8000-8080 } accept"
            ),
            "{listing}"
        );
        assert!(listing.contains("group 7\n\t\tdrop"), "{listing}");
        assert!(
            listing.contains(
                "ct state new counter packets 0 bytes 0 log prefix \"ociguard-new \" group 7"
            ),
            "{listing}"
        );
    }

    #[test]
    fn a_rejected_message_names_itself_and_nothing_is_installed() {
        use netlink_packet_core::{NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST};
        use netlink_packet_netfilter::nftables::{
            NfTablesMessage, RuleAttribute, RuleMessage, TableAttribute, TableMessage,
        };
        use netlink_packet_netfilter::none::ControlMessage;
        use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
        let mut bytes = Vec::new();
        let mut put = |seq: u32, flags: u16, inner: NetfilterMessage| {
            let mut m = NetlinkMessage::from(inner);
            m.header.flags = flags;
            m.header.sequence_number = seq;
            m.finalize();
            let at = bytes.len();
            bytes.resize(at + m.buffer_len(), 0);
            m.serialize(&mut bytes[at..]);
        };
        let nf = |m: NfTablesMessage| {
            NetfilterMessage::new(NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0), m)
        };
        let ctl = |c: ControlMessage| {
            NetfilterMessage::new(NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 10), c)
        };
        put(0, NLM_F_REQUEST, ctl(ControlMessage::BatchBegin));
        put(
            1,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
            nf(NfTablesMessage::NewTable(TableMessage {
                attributes: vec![TableAttribute::Name("ociguard".into())],
            })),
        );
        put(
            2,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
            nf(NfTablesMessage::NewRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table("ociguard".into()),
                    RuleAttribute::Chain("no-such-chain".into()),
                ],
            })),
        );
        put(3, NLM_F_REQUEST, ctl(ControlMessage::BatchEnd));
        let batch = Batch {
            bytes,
            acks: vec!["table inet ociguard".into(), "rule 1".into()],
        };
        let Some((err, listing)) = in_new_netns(move || {
            let err = apply(&batch).unwrap_err();
            let listing = std::process::Command::new("nft")
                .args(["list", "ruleset"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            (err, listing)
        }) else {
            return;
        };
        let text = err.to_string();
        assert!(
            matches!(&err, NfnlError::Rejected { what, source, .. } if what == "rule 1" && source.raw_os_error() == Some(2)),
            "{text}"
        );
        assert!(text.contains("rule 1"), "{text}");
        if let Ok(listing) = listing {
            assert!(
                listing.trim().is_empty(),
                "the table must not exist: {listing}"
            );
        }
    }

    #[test]
    fn garbage_and_truncation_end_quietly() {
        assert!(answers(&[]).is_empty());
        assert!(answers(&[1, 2, 3]).is_empty());
        let d = error_message(1, 0, None);
        assert!(answers(&d[..d.len() - 1]).is_empty());
        // a length below the header size must not loop forever
        let mut bad = d.clone();
        bad[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(answers(&bad).is_empty());
    }
}
