//! ociguardd as a process: bad input, stalled peers, crashes, spool, permissions, reconciliation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ociguard_monitor::procfs;
use ociguard_monitor::protocol::{EventKind, Lifecycle, Request};
use ociguard_monitor::record::{ExitSource, Status};

fn ping_ok(m: &Monitor) -> bool {
    m.request(&Request::Ping).map(|r| r.ok).unwrap_or(false)
}

#[test]
fn garbage_oversized_and_stalled_peers_do_not_stop_others() {
    // Long enough that a ping served only after the stalled peers were dropped is told apart
    // from one served beside them, on a loaded machine too.
    let m = Monitor::new(&["--idle-timeout", "3s"]);
    // A peer that connects and says nothing, and one that stalls mid-line.
    let silent = UnixStream::connect(m.socket()).unwrap();
    let mut half = UnixStream::connect(m.socket()).unwrap();
    half.write_all(b"{\"op\":\"pi").unwrap();
    let t = Instant::now();
    assert!(ping_ok(&m));
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );

    // Garbage: an error line, then the connection is closed.
    for garbage in [
        &b"not json at all\n"[..],
        b"{\"op\":\"format-disk\"}\n",
        b"\xff\xfe\x00\x01\n",
    ] {
        let mut c = m.client();
        c.send_raw(garbage).unwrap();
        let r = c.receive().unwrap().unwrap();
        assert!(!r.ok);
        assert!(r.error.unwrap().starts_with("bad request"));
        assert!(c.receive().unwrap().is_none(), "connection stays open");
        assert!(ping_ok(&m));
    }
    // Oversized: refused without reading it all.
    let mut c = m.client();
    let big = vec![b'x'; 200 * 1024];
    let _ = c.send_raw(&big); // the monitor may close before we finish writing
    let r = c.receive().unwrap().unwrap();
    assert_eq!(r.error.as_deref(), Some("request larger than 65536 bytes"));
    assert!(ping_ok(&m));

    // The stalled peers are disconnected after the idle timeout.
    for mut s in [silent, half] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).unwrap(), 0);
    }
    let log = m.log_text();
    assert!(log.contains("bad request"), "{log}");
    assert!(log.contains("larger than 65536 bytes"), "{log}");
    assert!(log.contains("idle for"), "{log}");
    assert!(ping_ok(&m));
}

#[test]
fn registration_is_durable_and_survives_sigkill_and_a_torn_tail() {
    let mut m = Monitor::new(&[]);
    for i in 0..3 {
        let r = m.register(ident(&format!("c{i}")));
        assert!(r.ok && r.durable == Some(true), "{r:?}");
    }
    m.kill9();
    // A crash in the middle of writing the next record: half a line after the last one (in
    // the journal's zero-filled space).
    let data = std::fs::read(m.journal()).unwrap();
    let good = data.iter().rposition(|&b| b == b'\n').unwrap() as u64 + 1;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.journal())
        .unwrap();
    f.write_all_at(
        b"612 deadbeef {\"seq\":4,\"put\":{\"id\":\"c3\",\"bun",
        good,
    )
    .unwrap();
    drop(f);
    m.start();
    let ids: Vec<String> = m.list().into_iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(
        m.log_text().contains("torn last record"),
        "{}",
        m.log_text()
    );
    // Cut back to the last good record (reconciliation may append after it).
    let journal = std::fs::read(m.journal()).unwrap();
    assert!(journal.len() as u64 >= good);
    assert!(!String::from_utf8_lossy(&journal).contains("deadbeef"));
    assert!(m.register(ident("c3")).ok);
    assert_eq!(m.list().len(), 4);
}

#[test]
fn sigkill_during_a_burst_of_50_registrations_loses_no_acknowledged_one() {
    let mut m = Monitor::new(&[]);
    for round in 0..3 {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let barrier = Arc::new(Barrier::new(51));
        let socket = m.socket();
        let threads: Vec<_> = (0..50)
            .map(|i| {
                let (acked, barrier, socket) = (acked.clone(), barrier.clone(), socket.clone());
                std::thread::spawn(move || {
                    let id = format!("burst-{round}-{i}");
                    let req = Request::Register {
                        event: Lifecycle::Created,
                        identity: ident(&id),
                    };
                    barrier.wait();
                    if let Ok(r) =
                        ociguard_monitor::client::request(&socket, &req, Duration::from_secs(5))
                    {
                        if r.ok && r.durable == Some(true) {
                            acked.lock().unwrap().push(id);
                        }
                    }
                })
            })
            .collect();
        barrier.wait();
        // Kill as soon as some (not all) registrations were acknowledged.
        let deadline = Instant::now() + Duration::from_secs(5);
        while acked.lock().unwrap().len() < 5 + round * 10 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        m.kill9();
        for t in threads {
            t.join().unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        m.start();
        let present: std::collections::HashSet<String> =
            m.list().into_iter().map(|c| c.id).collect();
        let lost: Vec<&String> = acked.iter().filter(|id| !present.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged but lost: {lost:?}"
        );
        eprintln!(
            "round {round}: {} of 50 acknowledged before SIGKILL, all present after restart",
            acked.len()
        );
    }
}

#[test]
fn hook_spools_while_monitor_is_down_and_monitor_ingests_at_start() {
    let hook = sibling_bin("ociguard-hook");
    let mut m = Monitor::stopped(&[]);
    let mut sleeper = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let (_, state) = bundle_and_state(
        m.dir.path(),
        "spooled",
        sleeper.id(),
        r#"{"org.ociguard.policy":"p","org.ociguard.policy.digest":"sha256:00"}"#,
    );
    let out = run_with_stdin(
        Command::new(&hook)
            .args(["createRuntime", "--identity", "best-effort", "--socket"])
            .arg(m.socket())
            .arg("--spool")
            .arg(m.spool()),
        &state,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("identity spooled to"),
        "{}",
        text(&out.stderr)
    );
    // A file that is not a report is set aside, not retried forever.
    std::fs::write(m.spool().join("00000000000000000000-1-1.json"), b"{garbage").unwrap();

    m.start();
    let list = m.list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].id, "spooled");
    assert_eq!(list[0].pid, Some(sleeper.id()));
    assert_eq!(
        list[0].policy.as_ref().unwrap().digest.as_deref(),
        Some("sha256:00")
    );
    assert_eq!(list[0].status, Status::Created);
    assert!(ociguard_monitor::spool::pending(&m.spool())
        .unwrap()
        .is_empty());
    assert!(m.spool().join("rejected").read_dir().unwrap().count() == 1);
    assert!(m.log_text().contains("rejected"), "{}", m.log_text());
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn hook_with_malformed_state() {
    let hook = sibling_bin("ociguard-hook");
    let m = Monitor::new(&[]);
    for (mode, ok) in [("required", false), ("best-effort", true)] {
        for bad in ["", "{", r#"{"id":"x","pid":"one","bundle":"/b"}"#, "[]"] {
            let out = run_with_stdin(
                Command::new(&hook)
                    .args(["createRuntime", "--identity", mode, "--socket"])
                    .arg(m.socket())
                    .arg("--spool")
                    .arg(m.spool()),
                bad,
            );
            assert_eq!(
                out.status.success(),
                ok,
                "{mode} {bad:?}: {}",
                text(&out.stderr)
            );
            let err = text(&out.stderr);
            assert!(err.contains("OCI state on stdin"), "{err}");
        }
    }
    let out = run_with_stdin(Command::new(&hook).arg("prestart"), "{}");
    assert_eq!(out.status.code(), Some(2));
    assert!(ping_ok(&m));
    assert!(m.list().is_empty());
}

#[test]
fn a_hook_that_cannot_finish_ends_itself_at_its_deadline() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let hook = sibling_bin("ociguard-hook");
    let dir = tempfile::tempdir().unwrap();
    // A monitor that accepts connections into its queue and never answers: the hook's own
    // per-step timeout (60 s) would wait far past the deadline.
    let socket = dir.path().join("stalled.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut sleeper = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let (_, state) = bundle_and_state(dir.path(), "stalled", sleeper.id(), "{}");
    let mut cmd = Command::new(&hook);
    cmd.args([
        "createRuntime",
        "--identity",
        "required",
        "--timeout",
        "60s",
    ])
    .args(["--deadline", "1", "--socket"])
    .arg(&socket)
    .arg("--spool")
    .arg(dir.path().join("spool"));
    // What a runtime may leave behind: SIGALRM ignored and blocked (both survive execve).
    #[allow(unsafe_code)]
    // SAFETY: signal(2) and sigprocmask(2) are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
            signal(Signal::SIGALRM, SigHandler::SigIgn)?;
            SigSet::from(Signal::SIGALRM).thread_block()?;
            Ok(())
        });
    }
    let t = Instant::now();
    let out = run_with_stdin(&mut cmd, &state);
    let took = t.elapsed();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(
        out.status.signal(),
        Some(nix::sys::signal::Signal::SIGALRM as i32),
        "{:?} after {took:?}: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn spool_full_is_reported_and_the_container_still_runs() {
    let hook = sibling_bin("ociguard-hook");
    if !is_root() {
        eprintln!("skip: mounting a tiny tmpfs needs root");
        return;
    }
    let m = Monitor::stopped(&[]);
    let spool = m.spool();
    std::fs::create_dir_all(&spool).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8k,nr_inodes=8", "tmpfs"])
        .arg(&spool)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skip: cannot mount tmpfs");
        return;
    }
    // Fill it.
    let _ = std::fs::write(spool.join("filler"), vec![0u8; 64 * 1024]);
    for i in 0..16 {
        let _ = std::fs::write(spool.join(format!("f{i}")), b"");
    }
    let (_, state) = bundle_and_state(m.dir.path(), "full", std::process::id(), "{}");
    let out = run_with_stdin(
        Command::new(&hook)
            .args(["createRuntime", "--identity", "best-effort", "--socket"])
            .arg(m.socket())
            .arg("--spool")
            .arg(&spool),
        &state,
    );
    let _ = Command::new("umount").arg(&spool).status();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("identity not recorded"), "{err}");
    assert!(
        err.contains("No space left on device") || err.contains("Disk quota"),
        "{err}"
    );
}

#[test]
fn non_root_peer_cannot_register_or_deregister() {
    if !is_root() || !std::path::Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skip: needs root and setpriv");
        return;
    }
    let (hook, ctl) = (sibling_bin("ociguard-hook"), sibling_bin("ociguardctl"));
    let m = Monitor::new(&[]);
    assert!(m.register(ident("victim")).ok);
    let nobody = |args: &[&std::ffi::OsStr], stdin: &str| {
        let mut c = Command::new("/usr/bin/setpriv");
        c.args([
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "--",
        ])
        .args(args);
        run_with_stdin(&mut c, stdin)
    };
    // The bundle and state must be readable by nobody.
    let pub_dir = tempfile::Builder::new()
        .prefix("ociguard-nobody-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(pub_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (b, state) = bundle_and_state(pub_dir.path(), "forged", std::process::id(), "{}");
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = m.socket();
    let hook_args = |mode: &str| -> Vec<std::ffi::OsString> {
        vec![
            hook.clone().into(),
            "createRuntime".into(),
            "--identity".into(),
            mode.into(),
            "--socket".into(),
            sock.clone().into(),
            "--spool".into(),
            pub_dir.path().join("spool").into(),
        ]
    };
    let as_refs = |v: &[std::ffi::OsString]| -> Vec<std::ffi::OsString> { v.to_vec() };

    // 1. The socket's directory is 0700: nobody cannot even connect.
    let a = as_refs(&hook_args("required"));
    let refs: Vec<&std::ffi::OsStr> = a.iter().map(|s| s.as_os_str()).collect();
    let out = nobody(&refs, &state);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );

    // 2. Even with the socket opened up, the kernel's credentials decide.
    std::fs::set_permissions(
        sock.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = nobody(&refs, &state);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("permission denied: uid 65534 may not register"),
        "{}",
        text(&out.stderr)
    );
    let out = nobody(
        &[
            ctl.as_os_str(),
            "deregister".as_ref(),
            "victim".as_ref(),
            "--socket".as_ref(),
            sock.as_os_str(),
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("permission denied: uid 65534 may not deregister"),
        "{}",
        text(&out.stderr)
    );
    // ...but may ask who it is.
    let out = nobody(
        &[
            ctl.as_os_str(),
            "whoami".as_ref(),
            "--socket".as_ref(),
            sock.as_os_str(),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("not a container"));
    let ids: Vec<String> = m.list().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["victim"]);
    assert!(m.log_text().contains("uid 65534 may not register"));
}

#[test]
fn workload_socket_answers_only_whoami() {
    let ws = tempfile::tempdir().unwrap();
    let wsock = ws.path().join("w/whoami.sock");
    let m = Monitor::new(&["--workload-socket", wsock.to_str().unwrap()]);
    let mode = std::fs::metadata(&wsock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    let r = ociguard_monitor::client::request(&wsock, &Request::Whoami, Duration::from_secs(5))
        .unwrap();
    assert!(r.ok && r.container.is_none(), "{r:?}");
    let r = ociguard_monitor::client::request(
        &wsock,
        &Request::Register {
            event: Lifecycle::Created,
            identity: ident("x"),
        },
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(!r.ok);
    assert!(r
        .error
        .unwrap()
        .contains("not available on the workload socket"));
    let admin_mode = std::fs::metadata(m.socket().parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(admin_mode, 0o700);
}

#[test]
fn exit_status_reconciliation_and_reused_pids() {
    let mut m = Monitor::new(&[]);
    let mut child = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    let st = procfs::stat(pid).unwrap().start_time;
    let mut live = ident("live");
    live.pid = Some(pid);
    live.start_time = Some(st);
    live.boot_id = procfs::boot_id().ok().map(Into::into);
    assert!(m.register(live.clone()).ok);
    let r = m.request(&Request::Whois { pid }).unwrap();
    assert_eq!(r.container.unwrap().id, "live");

    // A record naming this pid with another start time (the pid was reused): never attributed.
    let mut stale = ident("stale");
    stale.pid = Some(std::process::id());
    stale.start_time = Some(procfs::stat(std::process::id()).unwrap().start_time - 1);
    stale.boot_id = procfs::boot_id().ok().map(Into::into);
    assert!(m.register(stale).ok);
    let r = m
        .request(&Request::Whois {
            pid: std::process::id(),
        })
        .unwrap();
    assert!(r.container.is_none(), "{r:?}");

    // Follow events, then kill the process: the kernel's exit event gives its status.
    let mut follower = m.client();
    follower.send(&Request::Events { follow: true }).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let exited = loop {
        let list = m.list();
        let rec = list.into_iter().find(|c| c.id == "live").unwrap();
        if rec.status == Status::Exited || Instant::now() > deadline {
            break rec;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exited.status, Status::Exited);
    let exit = exited.exit.unwrap();
    if exit.source == ExitSource::Kernel {
        assert_eq!(exit.signal, Some(9));
    } else {
        eprintln!("note: no kernel exit events here ({exit:?})");
    }
    let mut kinds = Vec::new();
    while let Ok(Some(r)) = follower.receive() {
        let e = r.event.unwrap();
        kinds.push((e.kind, e.id));
        if kinds
            .iter()
            .any(|(k, id)| *k == EventKind::Exited && id == "live")
        {
            break;
        }
    }
    assert!(
        kinds.contains(&(EventKind::Registered, "live".to_owned())),
        "{kinds:?}"
    );

    // On restart, reconciliation marks the stale record exited (its process is not there).
    m.kill9();
    m.start();
    let stale = m.list().into_iter().find(|c| c.id == "stale").unwrap();
    assert_eq!(stale.status, Status::Exited);
    assert_eq!(stale.exit.unwrap().source, ExitSource::Reconciled);
    let log = m.log_text();
    assert!(log.contains("now belongs to another process"), "{log}");
}

/// Two monitors pointed at one socket (different state directories, so the state lock does not
/// stop the second): the second is refused instead of taking the socket over; and a monitor
/// shutting down after a successor bound the path leaves the successor's socket in place.
#[test]
fn a_served_socket_is_never_taken_over_or_removed_by_another_monitor() {
    let mut first = Monitor::new(&[]);
    let other = tempfile::tempdir().unwrap();
    let second = |socket: &std::path::Path| {
        let mut c = Command::new(OCIGUARDD);
        c.env("OCIGUARD_CONFIG", other.path().join("no-config.toml"))
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(other.path().join("state"))
            .arg("--spool-dir")
            .arg(other.path().join("spool"))
            .arg("--no-bpf");
        c
    };
    let out = second(&first.socket()).output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("another process is serving"), "{err}");
    assert!(ping_ok(&first), "the first monitor lost its socket");

    // The path is freed (an operator removed it) and a successor binds it; then the first
    // monitor stops gracefully: the successor keeps its socket.
    std::fs::remove_file(first.socket()).unwrap();
    let mut successor = second(&first.socket())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping_ok(&first) {
        assert!(Instant::now() < deadline, "the successor did not come up");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = nix::unistd::Pid::from_raw(first.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = first.child.take().unwrap().wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        first.log_text().contains("another process serves it now"),
        "{}",
        first.log_text()
    );
    assert!(ping_ok(&first), "the successor's socket was removed");
    let _ = successor.kill();
    let _ = successor.wait();
}

#[test]
fn every_event_is_exported_as_a_json_line_and_a_bad_export_path_stops_the_start() {
    let events =
        std::env::temp_dir().join(format!("ociguardd-events-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&events);
    let m = Monitor::new(&["--events-file", events.to_str().unwrap()]);
    assert!(m.register(ident("exp-1")).ok);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let line = loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("\"exp-1\"")) {
            break l.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{text}\n{}",
            m.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["kind"], "registered");
    assert_eq!(v["id"], "exp-1");
    let _ = std::fs::remove_file(&events);

    // A path that cannot be written: ociguardd refuses to start and says why.
    let bad = Monitor::stopped(&[]);
    let out = Command::new(OCIGUARDD)
        .env("OCIGUARD_CONFIG", bad.dir.path().join("no-config.toml"))
        .arg("--socket")
        .arg(bad.socket())
        .arg("--state-dir")
        .arg(bad.state_dir())
        .args([
            "--no-bpf",
            "--no-guard",
            "--events-file",
            "/nonexistent-dir/events.jsonl",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("event export") && err.contains("nonexistent-dir"),
        "{err}"
    );
}

#[test]
fn metrics_count_a_refusal_from_the_decision_log_and_it_is_exported_as_an_event() {
    use ociguard_monitor::metrics::{self, Address};
    // A free port: bound by us, then released for ociguardd.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut m = Monitor::stopped(&[]);
    let decisions = m.dir.path().join("log/decisions.jsonl");
    let events = m.dir.path().join("events.jsonl");
    std::fs::create_dir_all(decisions.parent().unwrap()).unwrap();
    std::fs::write(
        m.dir.path().join("no-config.toml"),
        format!("decision_log = {:?}\n", decisions.to_str().unwrap()),
    )
    .unwrap();
    let refused = |id: &str| {
        format!(
            r#"{{"time":"t","command":"create","id":"{id}","bundle":"/b/{id}","runtime":"/usr/bin/crun","result":"refused","decision":{{"policy":"web"}},"error":"egress: nft missing"}}"#
        )
    };
    // Decided before the monitor started: not counted again.
    std::fs::write(&decisions, refused("before") + "\n").unwrap();
    let address = format!("127.0.0.1:{port}");
    m.extra = ["--metrics-address", &address, "--events-file"]
        .iter()
        .map(|s| s.to_string())
        .chain([events.to_str().unwrap().to_owned()])
        .collect();
    m.start();
    let addr = Address::parse(&address).unwrap();
    assert!(m.register(ident("reg-1")).ok);

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&decisions)
        .unwrap();
    writeln!(f, "{}", refused("after")).unwrap();
    let applied = r#"{"command":"create","id":"ok-1","bundle":"/b","result":"applied","decision":{"policy":"web"}}"#;
    // Half a line: counted only once its newline is written.
    f.write_all(&applied.as_bytes()[..20]).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let scrape = || {
        let (status, body) = metrics::get(&addr, "/metrics").unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        body
    };
    let body = loop {
        let body = scrape();
        if body.contains(r#"ociguard_events_total{kind="refused"}"#) {
            break body;
        }
        assert!(Instant::now() < deadline, "{body}\n{}", m.log_text());
        std::thread::sleep(Duration::from_millis(50));
    };
    for want in [
        r#"ociguard_decisions_total{result="refused",policy="web"} 1"#,
        r#"ociguard_events_total{kind="refused"} 1"#,
        r#"ociguard_events_total{kind="registered"} 1"#,
        r#"ociguard_containers{policy="",state="created"} 1"#,
        r#"ociguard_journal_fsync_seconds_count{op="append"} 1"#,
    ] {
        assert!(body.contains(want), "{want:?} not in:\n{body}");
    }
    assert!(!body.contains(r#"result="applied""#), "{body}");
    f.write_all(&applied.as_bytes()[20..]).unwrap();
    f.write_all(b"\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !scrape().contains(r#"ociguard_decisions_total{result="applied",policy="web"} 1"#) {
        assert!(Instant::now() < deadline, "{}", scrape());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        metrics::get(&addr, "/other").unwrap().0,
        "HTTP/1.1 404 Not Found"
    );

    // The refusal is an event like any other: exported.
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(r#""kind":"refused""#)) {
            break l.to_owned();
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["id"], "after");
    assert_eq!(v["bundle"], "/b/after");
    assert_eq!(v["detail"]["policy"], "web");
    assert_eq!(v["detail"]["error"], "egress: nft missing");
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(!text.contains(r#""before""#), "{text}");
}
