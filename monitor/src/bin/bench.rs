//! `make bench`, identity part: what registering and looking up a container costs.
//!
//! Against a real ociguardd whose journal is on disk (`--dir`, default /var/tmp: fsync is real):
//! 1. registration round trip as a container engine pays it: spawn `ociguard-hook createRuntime`
//!    with an OCI state on stdin, until it exits after the monitor's durable acknowledgement;
//! 2. the same request from an in-process client (protocol + journal fsync, no process spawn);
//! 3. `whois` over the socket (a container's pid, and a host pid: the slowest path) and the
//!    in-process lookup alone;
//! 4. the monitor's resident memory with 10,000 registered containers (and after a restart,
//!    i.e. replaying a 10,000-record journal);
//! 5. metrics and export (`--only-metrics` for this part alone): a `/metrics` scrape of a real
//!    ociguardd with 1,000 registered containers, the hub's event throughput with and without
//!    a scraper running, and the events per second the JSON-lines exporter writes to a file
//!    and sends to a syslog socket.

#![allow(clippy::print_stdout)] // a report: stdout is its output

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use ociguard_monitor::events::{Hub, SUBSCRIBER_QUEUE};
use ociguard_monitor::export::{self, Target};
use ociguard_monitor::metrics::{self, Address, Metrics};
use ociguard_monitor::procfs::{self, Real};
use ociguard_monitor::protocol::EventKind;
use ociguard_monitor::protocol::{Lifecycle, Request};
use ociguard_monitor::record::{Identity, Image, Kubernetes, Namespaces, PolicyRef, Timestamp};
use ociguard_monitor::store::Store;
use ociguard_monitor::{exitwatch, export_syslog};
use ociguard_monitor::{journal::Entry, Client};

#[derive(Parser, Debug)]
struct Args {
    /// ociguardd binary (default: next to this one).
    #[arg(long)]
    ociguardd: Option<PathBuf>,
    /// ociguard-hook binary (default: next to this one).
    #[arg(long)]
    hook: Option<PathBuf>,
    /// Where the journal lives (a disk, not tmpfs, to pay for fsync).
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    #[arg(long, default_value_t = 400)]
    hook_iterations: usize,
    #[arg(long, default_value_t = 2000)]
    client_iterations: usize,
    #[arg(long, default_value_t = 20_000)]
    whois_iterations: usize,
    #[arg(long, default_value_t = 10_000)]
    containers: usize,
    /// Registered containers while `/metrics` is scraped.
    #[arg(long, default_value_t = 1_000)]
    scrape_containers: usize,
    #[arg(long, default_value_t = 500)]
    scrape_iterations: usize,
    /// Events published for the hub and export throughputs.
    #[arg(long, default_value_t = 200_000)]
    export_events: usize,
    /// Only part 5 (metrics and export).
    #[arg(long)]
    only_metrics: bool,
}

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("exe dir")?.join(name))
}

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &Path, work: &Path) -> Result<Daemon> {
    start_with(bin, work, &[])
}

fn start_with(bin: &Path, work: &Path, extra: &[&str]) -> Result<Daemon> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(work.join("ociguardd.log"))?;
    let child = Command::new(bin)
        .env("OCIGUARD_CONFIG", work.join("none.toml"))
        .arg("--socket")
        .arg(work.join("run/monitor.sock"))
        .arg("--state-dir")
        .arg(work.join("state"))
        .arg("--spool-dir")
        .arg(work.join("spool"))
        .arg("--no-bpf")
        .args(["--log-level", "warn", "--compact-after", "1000000"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let d = Daemon { child };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = ociguard_monitor::client::request(
            &work.join("run/monitor.sock"),
            &Request::Ping,
            Duration::from_secs(1),
        ) {
            if r.ok {
                return Ok(d);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!(
        "ociguardd did not start (see {})",
        work.join("ociguardd.log").display()
    )
}

/// A record about as large as a real Kubernetes container's.
fn sample(i: usize) -> Identity {
    let mut labels = ociguard_monitor::record::StrMap::new();
    labels.insert(
        "org.opencontainers.image.source".to_owned(),
        "https://git.example.com/payments/api".to_owned(),
    );
    labels.insert(
        "org.opencontainers.image.version".to_owned(),
        "1.4.2".to_owned(),
    );
    let id = format!("{i:08x}{}", "0".repeat(56));
    Identity {
        bundle: format!("/run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}"),
        id,
        engine: Some("containerd".into()),
        pid: Some(1_000_000 + i as u32),
        start_time: Some(123_456_789),
        boot_id: Some("3aa3bb1e-c0f7-45f9-ba51-94e133069de6".into()),
        cgroup: Some(format!(
            "/kubepods/burstable/pod{i:08x}-1111-2222-3333-444444444444/{i:064x}"
        )),
        namespaces: Namespaces {
            pid: Some(4_026_532_000 + i as u64),
            net: Some(4_026_531_833),
            mnt: Some(4_026_533_000 + i as u64),
        },
        image: Image {
            name: Some("registry.example.com/payments/api:1.4.2".into()),
            digest: Some(format!("sha256:{}", "ab".repeat(32)).into()),
            labels,
        },
        kubernetes: Some(Kubernetes {
            namespace: Some("payments".into()),
            pod: Some(format!("api-7d9f8c6b5-{i:05}")),
            pod_uid: Some("0b8a7c3e-2f41-4d7e-9a1b-5c6d7e8f9a0b".to_owned()),
            container: Some("api".to_owned()),
            service_account: Some("payments-api".into()),
        }),
        policy: Some(PolicyRef {
            name: "payments".into(),
            digest: Some(format!("sha256:{}", "cd".repeat(32)).into()),
            mode: Some("enforce".into()),
        }),
        profiles: [("seccomp".to_owned(), format!("sha256:{}", "ef".repeat(32)))]
            .into_iter()
            .collect(),
        created: Some(Timestamp::now()),
        ..Default::default()
    }
}

/// Process exec and exit events with the kernel's timestamps, read on a thread of their own.
struct KernelClock {
    stop: Arc<AtomicBool>,
    reader: std::thread::JoinHandle<Vec<exitwatch::ProcEvent>>,
}

impl KernelClock {
    fn start() -> Option<KernelClock> {
        let fd = exitwatch::subscribe_all().ok()?;
        nix::sys::socket::setsockopt(
            &fd,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(0, 100_000),
        )
        .ok()?;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&stop);
        let reader = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let mut events = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = nix::sys::socket::recv(
                    fd.as_raw_fd(),
                    &mut buf,
                    nix::sys::socket::MsgFlags::empty(),
                ) {
                    events.extend(exitwatch::parse_events(&buf[..n]));
                }
            }
            events
        });
        Some(KernelClock { stop, reader })
    }

    /// Exec to exit of each of the pids in each group (the last exec of the pid before its
    /// exit).
    fn lives(self, groups: &[&[u32]]) -> Result<Vec<Vec<Duration>>> {
        // The last exit events may still be on their way.
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::Relaxed);
        let events = self
            .reader
            .join()
            .map_err(|_| anyhow::anyhow!("event reader panicked"))?;
        let mut all = Vec::with_capacity(groups.len());
        for pids in groups {
            let mut lives = Vec::with_capacity(pids.len());
            for &pid in *pids {
                let exec = events
                    .iter()
                    .filter(|e| e.what == exitwatch::PROC_EVENT_EXEC && e.tgid == pid)
                    .map(|e| e.time_ns)
                    .max();
                let exit = events
                    .iter()
                    .find(|e| e.what == exitwatch::PROC_EVENT_EXIT && e.pid == pid && e.tgid == pid)
                    .map(|e| e.time_ns);
                match (exec, exit) {
                    (Some(a), Some(b)) if b >= a => lives.push(Duration::from_nanos(b - a)),
                    _ => bail!("events of pid {pid} missing (socket overflow?)"),
                }
            }
            all.push(lives);
        }
        Ok(all)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut v: Vec<Duration>, target: Option<(Duration, &str)>) {
    v.sort();
    let (m, p90, p99) = (
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        percentile(&v, 0.99),
    );
    let verdict = match target {
        Some((t, what)) => {
            let val = if what == "p99" { p99 } else { m };
            format!(
                "  target {what} < {t:?}: {}",
                if val < t { "met" } else { "MISSED" }
            )
        }
        None => String::new(),
    };
    println!(
        "{name:<52} n={:<6} median {:>10.1?}  p90 {:>10.1?}  p99 {:>10.1?}{verdict}",
        v.len(),
        m,
        p90,
        p99
    );
}

/// A `config.json` the size and shape of one ociguard rewrote for a Kubernetes container: the
/// built-in seccomp profile, and next to it the precompiled filter crun takes (its bytes do
/// not matter to the hook, its size does: ~10 KiB of base64 for the built-in profile).
fn realistic_config() -> serde_json::Value {
    let mounts: Vec<serde_json::Value> = [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
        ("/etc/hosts", "bind"),
        ("/etc/resolv.conf", "bind"),
    ]
    .iter()
    .map(|(dest, kind)| serde_json::json!({"destination": dest, "type": kind, "source": kind, "options": ["nosuid", "noexec", "nodev"]}))
    .collect();
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["/app", "--listen", ":8080"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=api-7d9"],
            "cwd": "/",
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_CHOWN", "CAP_KILL"], "permitted": ["CAP_CHOWN", "CAP_KILL"]},
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "hostname": "api-7d9",
        "mounts": mounts,
        "annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": "api",
            "io.kubernetes.cri.sandbox-namespace": "payments",
            "io.kubernetes.cri.sandbox-name": "api-7d9",
            "io.kubernetes.cri.image-name": "registry.example.com/payments/api:1.4.2",
            "org.ociguard.policy": "payments",
            "org.ociguard.policy.digest": format!("sha256:{}", "cd".repeat(32)),
            "org.ociguard.policy.mode": "enforce",
            "org.ociguard.seccomp.bpf": format!("sha256:{}", "ef".repeat(32)),
            "run.oci.seccomp_bpf_data": "A".repeat(10_072)
        },
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "seccomp": ociguard_policy::seccomp::builtin_profile(false),
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/sys"]
        }
    })
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

fn main() -> Result<()> {
    let args = Args::parse();
    let ociguardd = match &args.ociguardd {
        Some(p) => p.clone(),
        None => sibling("ociguardd")?,
    };
    let hook = match &args.hook {
        Some(p) => p.clone(),
        None => sibling("ociguard-hook")?,
    };
    let work = tempfile::Builder::new()
        .prefix("ociguard-monitor-bench-")
        .tempdir_in(&args.dir)
        .with_context(|| format!("temp dir in {}", args.dir.display()))?;
    let w = work.path();
    let fs = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(w)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "ociguard identity benchmark — journal on {} ({fs})",
        w.display()
    );
    if args.only_metrics {
        return metrics_and_export(&args, &ociguardd, w);
    }
    let mut daemon = start(&ociguardd, w)?;
    let socket = w.join("run/monitor.sock");

    // 1. Hook invocation to durable ack.
    let bundle = w.join("bundle");
    std::fs::create_dir_all(&bundle)?;
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&realistic_config())?,
    )?;
    // The "container": a child process. (Not this process: a registered container's cgroup
    // holds this process too, and the monitor rightly refuses admin requests from inside a
    // container. The child started later, so this process is not attributed to it.)
    // Like a real container it has its own pid namespace (falls back to a plain child).
    // (stdio closed: an orphaned sleep holding our stdout would keep `| tail` waiting.)
    let mut sleeper = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "/bin/sleep", "600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .or_else(|_| {
            Command::new("/bin/sleep")
                .arg("600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let me = loop {
        let parent = sleeper.id();
        let kids = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        let comm = std::fs::read_to_string(format!("/proc/{parent}/comm")).unwrap_or_default();
        if comm.trim() == "sleep" {
            break parent; // no unshare here
        }
        if let Some(pid) = kids.split_whitespace().next().and_then(|p| p.parse().ok()) {
            break pid;
        }
        if Instant::now() > deadline {
            bail!("container stand-in did not start");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut admin = Client::connect(&socket, Duration::from_secs(10))?;
    // Interleaved with the floor (spawning a process that does nothing), so that both see the
    // same machine: on a shared VM the noise moves within seconds.
    let mut hook_times = Vec::with_capacity(args.hook_iterations);
    let mut floor = Vec::with_capacity(args.hook_iterations);
    // The hook's own run, by the kernel's clock: its exec event to its exit event (the engine's
    // fork and the execve before the event are not in it; the time after the ack is: ~close
    // and exit).
    let kernel = KernelClock::start();
    let mut hook_pids = Vec::with_capacity(args.hook_iterations);
    let mut floor_pids = Vec::with_capacity(args.hook_iterations);
    for i in 0..args.hook_iterations {
        let t = Instant::now();
        let c = Command::new("/bin/true")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        floor_pids.push(c.id());
        let out = c.wait_with_output()?;
        floor.push(t.elapsed());
        if !out.status.success() {
            bail!("/bin/true failed");
        }

        let state = format!(
            r#"{{"ociVersion":"1.0.0","id":"hook-{i}","status":"created","pid":{me},"bundle":"{}"}}"#,
            bundle.display()
        );
        let t = Instant::now();
        let c = Command::new(&hook)
            .args(["createRuntime", "--identity", "required", "--socket"])
            .arg(&socket)
            .arg("--spool")
            .arg(w.join("spool"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut c = c;
        hook_pids.push(c.id());
        c.stdin
            .take()
            .context("stdin")?
            .write_all(state.as_bytes())?;
        let out = c.wait_with_output()?;
        hook_times.push(t.elapsed());
        if !out.status.success() {
            bail!("hook failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // The next hook process would be in this "container's" cgroup: forget it (unmeasured).
        admin.request(&Request::Deregister {
            id: format!("hook-{i}"),
            bundle: None,
        })?;
    }
    let lives = kernel.map(|k| k.lives(&[&floor_pids, &hook_pids]));
    report("floor: spawn /bin/true and wait", floor, None);
    report(
        "registration: ociguard-hook spawn -> durable ack",
        hook_times,
        Some((Duration::from_millis(2), "p99")),
    );
    match lives {
        Some(Ok(mut lives)) => {
            let hook = lives.pop().unwrap_or_default();
            let floor = lives.pop().unwrap_or_default();
            report("floor: /bin/true exec -> exit (kernel)", floor, None);
            report(
                "registration: ociguard-hook exec -> exit (kernel)",
                hook,
                Some((Duration::from_millis(2), "p99")),
            );
        }
        Some(Err(e)) => println!("registration: ociguard-hook exec -> exit (kernel): n/a ({e})"),
        None => println!(
            "registration: ociguard-hook exec -> exit (kernel): n/a (no proc connector: not root?)"
        ),
    }

    // 2. In-process client, persistent connection.
    let mut client = Client::connect(&socket, Duration::from_secs(10))?;
    let mut times = Vec::with_capacity(args.client_iterations);
    for i in 0..args.client_iterations {
        let req = Request::Register {
            event: Lifecycle::Created,
            identity: sample(i),
        };
        let t = Instant::now();
        let r = client.request(&req)?;
        times.push(t.elapsed());
        if !(r.ok && r.durable == Some(true)) {
            bail!("register: {r:?}");
        }
    }
    report(
        "registration: client request -> durable ack (fsync)",
        times,
        Some((Duration::from_millis(2), "p99")),
    );

    // 3. whois over the socket and in process.
    let mut selfrec = sample(9_999_999);
    selfrec.id = "bench-self".to_owned();
    selfrec.pid = Some(me);
    selfrec.start_time = Some(procfs::stat(me)?.start_time);
    selfrec.boot_id = procfs::boot_id().ok().map(Into::into);
    selfrec.cgroup = procfs::cgroup(me)?;
    selfrec.namespaces.pid = procfs::ns_inode(me, "pid").ok();
    let r = client.request(&Request::Register {
        event: Lifecycle::Started,
        identity: selfrec.clone(),
    })?;
    if !r.ok {
        bail!("register self: {r:?}");
    }
    let mut pings = Vec::with_capacity(args.whois_iterations);
    for _ in 0..args.whois_iterations {
        let t = Instant::now();
        client.request(&Request::Ping)?;
        pings.push(t.elapsed());
    }
    report("floor: ping over the socket", pings, None);
    // A host process: kthreadd (pid 2) is in the host's pid namespace on every Linux. Not pid 1:
    // in a sandbox its /proc/1/ns may be closed to this root (here pid 1 holds a capability this
    // root lacks), which turns the lookup into a failed read plus a stat line, not what a host
    // process on a node costs.
    let host_pid = 2;
    for (name, pid, expect) in [
        ("whois over the socket: a container's pid", me, true),
        (
            "whois over the socket: a host pid (slowest path)",
            host_pid,
            false,
        ),
    ] {
        let mut times = Vec::with_capacity(args.whois_iterations);
        for _ in 0..args.whois_iterations {
            let t = Instant::now();
            let r = client.request(&Request::Whois { pid })?;
            times.push(t.elapsed());
            if r.container.is_some() != expect {
                bail!("whois {pid}: {r:?}");
            }
        }
        report(name, times, None);
    }
    let mut store = Store::new(procfs::ns_inode(me, "pid").ok());
    for i in 0..args.containers {
        store.apply(Entry::Put(sample(i)));
    }
    store.apply(Entry::Put(selfrec));
    let proc = Real::new();
    for (name, pid) in [
        ("whois in process (10k records): a container's pid", me),
        ("whois in process (10k records): a host pid", host_pid),
    ] {
        let mut times = Vec::with_capacity(args.whois_iterations);
        for _ in 0..args.whois_iterations {
            let t = Instant::now();
            let l = store.whois(pid, &proc);
            times.push(t.elapsed());
            std::hint::black_box(l);
        }
        report(name, times, Some((Duration::from_micros(20), "median")));
    }
    drop(store);

    // 4. RSS with N containers registered.
    let have = args.client_iterations + 1; // hook records were deregistered
    let todo: Vec<usize> = (args.client_iterations
        ..args.client_iterations + args.containers.saturating_sub(have))
        .collect();
    let t = Instant::now();
    let chunks: Vec<Vec<usize>> = todo
        .chunks(todo.len().div_ceil(8).max(1))
        .map(<[usize]>::to_vec)
        .collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let socket = socket.clone();
            std::thread::spawn(move || -> Result<()> {
                let mut c = Client::connect(&socket, Duration::from_secs(30))?;
                for i in chunk {
                    let r = c.request(&Request::Register {
                        event: Lifecycle::Started,
                        identity: sample(i),
                    })?;
                    if !r.ok {
                        bail!("register: {r:?}");
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
    }
    let n = client
        .request(&Request::List)?
        .containers
        .map_or(0, |c| c.len());
    let fill = if todo.is_empty() {
        "the latency steps registered them all".to_owned()
    } else {
        format!(
            "{:.0} registrations/s with 8 concurrent clients",
            todo.len() as f64 / t.elapsed().as_secs_f64()
        )
    };
    let rss = rss_kib(daemon.child.id())?;
    println!(
        "{:<52} {n} containers: {:.1} MiB  target < 30 MiB: {}   ({fill})",
        "RSS of ociguardd",
        rss as f64 / 1024.0,
        if rss < 30 * 1024 { "met" } else { "MISSED" }
    );
    drop(client);
    drop(admin);
    drop(daemon);
    let t = Instant::now();
    daemon = start(&ociguardd, w)?;
    let startup = t.elapsed();
    let rss = rss_kib(daemon.child.id())?;
    println!(
        "{:<52} {n} containers: {:.1} MiB  (restart incl. journal replay + reconcile: {startup:.1?})",
        "RSS of ociguardd after restart",
        rss as f64 / 1024.0
    );
    if let Ok(pid) = i32::try_from(me) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    drop(daemon);
    metrics_and_export(&args, &ociguardd, w)
}

/// Events per second, as a report line.
fn rate(name: &str, n: usize, took: Duration, note: &str) {
    println!(
        "{name:<52} {:>10.0} events/s  ({n} in {took:.2?}){note}",
        n as f64 / took.as_secs_f64()
    );
}

/// Publish `n` events of a Kubernetes-sized record on `hub`, in bursts the followers' queues
/// hold, each burst once `done(published so far)` says the followers caught up.
fn publish_paced(hub: &Hub, n: usize, done: &dyn Fn(usize) -> bool) -> Result<Duration> {
    let rec = sample(1);
    let burst = SUBSCRIBER_QUEUE / 2;
    let t = Instant::now();
    let mut sent = 0;
    while sent < n {
        let k = burst.min(n - sent);
        for _ in 0..k {
            hub.publish(
                EventKind::EgressDenied,
                &rec,
                Some("tcp 198.18.1.2:4444 uid 0".to_owned()),
            );
        }
        sent += k;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(sent) {
            if Instant::now() > deadline {
                bail!("the exporter did not catch up ({sent} published)");
            }
            std::thread::yield_now();
        }
    }
    Ok(t.elapsed())
}

/// 5. Metrics scrape cost and event export throughput.
fn metrics_and_export(args: &Args, ociguardd: &Path, w: &Path) -> Result<()> {
    // a. A real ociguardd with N containers, scraped over HTTP.
    let work = w.join("metrics");
    std::fs::create_dir_all(&work)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let address = format!("127.0.0.1:{port}");
    let daemon = start_with(
        ociguardd,
        &work,
        &[
            "--metrics-address",
            &address,
            "--no-guard",
            "--no-decision-log",
        ],
    )?;
    let socket = work.join("run/monitor.sock");
    let mut client = Client::connect(&socket, Duration::from_secs(10))?;
    for i in 0..args.scrape_containers {
        let r = client.request(&Request::Register {
            event: Lifecycle::Started,
            identity: sample(i),
        })?;
        if !r.ok {
            bail!("register: {r:?}");
        }
    }
    let addr = Address::parse(&address).map_err(anyhow::Error::msg)?;
    let mut times = Vec::with_capacity(args.scrape_iterations);
    let mut size = 0;
    for _ in 0..args.scrape_iterations {
        let t = Instant::now();
        let (status, body) = metrics::get(&addr, "/metrics")?;
        times.push(t.elapsed());
        if !status.contains("200") {
            bail!("scrape: {status}");
        }
        size = body.len();
    }
    report(
        &format!(
            "scrape /metrics over HTTP ({} containers)",
            args.scrape_containers
        ),
        times,
        None,
    );
    println!("{:<52} {size} bytes", "  its size");
    drop(client);
    drop(daemon);

    // In process: the render alone, and the hub with and without a scraper.
    let store = Arc::new(RwLock::new(Store::new(None)));
    {
        let mut s = store.write().map_err(|_| anyhow::anyhow!("poisoned"))?;
        for i in 0..args.scrape_containers {
            s.apply(Entry::Put(sample(i)));
        }
    }
    let hub = Arc::new(Hub::new());
    let m = Metrics::new(Arc::clone(&store), Arc::clone(&hub));
    let mut times = Vec::with_capacity(args.scrape_iterations);
    for _ in 0..args.scrape_iterations {
        let t = Instant::now();
        std::hint::black_box(m.render());
        times.push(t.elapsed());
    }
    report(
        &format!(
            "render /metrics in process ({} containers)",
            args.scrape_containers
        ),
        times,
        None,
    );

    // The hub alone: one follower draining it (like `ociguardctl events --follow`).
    let hub_rate = |scraper: bool| -> Result<(Duration, usize)> {
        let hub = Arc::new(Hub::new());
        let rx = hub.subscribe_to(|_, _| true);
        let got = Arc::new(AtomicUsize::new(0));
        let g = Arc::clone(&got);
        std::thread::spawn(move || {
            while rx.recv().is_ok() {
                g.fetch_add(1, Ordering::Relaxed);
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(AtomicUsize::new(0));
        let scraping = scraper.then(|| -> Result<_> {
            let l = metrics::bind(&Address::Tcp("127.0.0.1:0".parse()?))?;
            let addr = l.address()?;
            let m = Metrics::new(Arc::clone(&store), Arc::clone(&hub));
            std::thread::spawn(move || metrics::serve(l, m));
            let (stop, scrapes) = (Arc::clone(&stop), Arc::clone(&scrapes));
            Ok(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if metrics::get(&addr, "/metrics").is_ok() {
                        scrapes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }))
        });
        let scraping = scraping.transpose()?;
        let took = publish_paced(&hub, args.export_events, &|sent| {
            got.load(Ordering::Relaxed) >= sent
        })?;
        stop.store(true, Ordering::Relaxed);
        if let Some(h) = scraping {
            let _ = h.join();
        }
        Ok((took, scrapes.load(Ordering::Relaxed)))
    };
    let (took, _) = hub_rate(false)?;
    rate(
        "hub: publish -> a follower, no scraper",
        args.export_events,
        took,
        "",
    );
    let (took, scrapes) = hub_rate(true)?;
    rate(
        "hub: publish -> a follower, scraped back to back",
        args.export_events,
        took,
        &format!(
            "  {scrapes} scrapes, {:.0}/s",
            scrapes as f64 / took.as_secs_f64()
        ),
    );

    // b. The JSON-lines exporter to a file on this disk.
    let hub = Arc::new(Hub::new());
    let path = work.join("events.jsonl");
    std::thread::spawn(export::start(Target::File(path.clone()), Arc::clone(&hub))?);
    // Lines written so far, counted in what was appended since the last look.
    let file = std::fs::File::open(&path)?;
    let (seen, counted) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0usize));
    let chunk = std::cell::RefCell::new(vec![0u8; 1 << 20]);
    let lines = || -> usize {
        use std::os::unix::fs::FileExt;
        let mut buf = chunk.borrow_mut();
        while let Ok(n) = file.read_at(&mut buf[..], seen.get()) {
            if n == 0 {
                break;
            }
            seen.set(seen.get() + n as u64);
            counted.set(counted.get() + buf[..n].iter().filter(|&&c| c == b'\n').count());
        }
        counted.get()
    };
    let took = publish_paced(&hub, args.export_events, &|sent| lines() >= sent)?;
    let lost = std::fs::read_to_string(&path)?
        .matches("export-lost")
        .count();
    rate(
        "export: JSON lines to a file",
        args.export_events,
        took,
        &format!(
            "  {} bytes/line, {lost} export-lost",
            seen.get() / counted.get().max(1) as u64
        ),
    );

    // ... and to a syslog datagram socket, read by a thread here.
    let hub = Arc::new(Hub::new());
    let sock = work.join("syslog.sock");
    let server = std::os::unix::net::UnixDatagram::bind(&sock)?;
    let got = Arc::new(AtomicUsize::new(0));
    let g = Arc::clone(&got);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while server.recv(&mut buf).is_ok() {
            g.fetch_add(1, Ordering::Relaxed);
        }
    });
    let sink = export_syslog::Sink::open(export_syslog::Syslog {
        socket: sock,
        ..Default::default()
    })?;
    std::thread::spawn(export::follow(sink, Arc::clone(&hub)));
    let took = publish_paced(&hub, args.export_events, &|sent| {
        got.load(Ordering::Relaxed) >= sent
    })?;
    rate(
        "export: syslog datagrams (RFC 3164, a local socket)",
        args.export_events,
        took,
        "",
    );
    Ok(())
}
