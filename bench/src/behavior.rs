//! `[behavior]` inside a container: what the enforcers cost the container's own work.
//!
//! The same container (busybox on an overlay, as engines mount one) runs two workloads under
//! three policies, interleaved round by round so that drift hits all alike:
//! - `none`: no `[behavior]` (identity and seccomp as in the others);
//! - `kernel`: reverse shells, dropped binaries, environ, the loader, `action = "kill"`: held
//!   by the BPF enforcer alone (no fanotify exec mark);
//! - `fanotify`: the same rules with `action = "deny"` (EPERM): fanotify's exec permission
//!   events in front, the BPF enforcer behind;
//! - `learn`: `kernel`'s rules under `mode = "learn"`: every exec reported by the enforcer and
//!   recorded into the image's behaviour profile;
//! - `compare`: `kernel` with `[profile] on_anomaly = "report"`: every exec reported and
//!   compared with that profile.
//!
//! Workloads, timed inside the container by busybox `time -p`: 10,000 fork+exec of
//! `/bin/true`, and 200,000 open+close of an ordinary file (a shell redirection, no fork).
//! Then the kernel maps' and ociguardd's memory per guarded container, and the event decoder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

const EXECS: u32 = 10_000;
const OPENS: u32 = 200_000;
const ROUNDS: usize = 5;
const VARIANTS: [&str; 5] = ["none", "kernel", "fanotify", "learn", "compare"];
/// The image every variant's container claims, so `learn` and `compare` share a profile.
const IMAGE: &str =
    "localhost/bench@sha256:0b1e2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
const RULES: &str = "reverse_shell = true\ndrop_exec = true\nenviron = true\n";

pub struct Setup<'a> {
    pub ociguard: &'a Path,
    pub ociguardd: &'a Path,
    pub hook: &'a Path,
    pub crun: &'a Path,
    pub rootfs: &'a Path,
    pub work: &'a Path,
}

pub fn run(s: &Setup<'_>) -> Result<()> {
    let w = s.work.join("behavior");
    let abs = |p: &Path| p.canonicalize().with_context(|| p.display().to_string());
    let (ociguard, hook) = (abs(s.ociguard)?, abs(s.hook)?);
    let s = &Setup {
        ociguard: &ociguard,
        hook: &hook,
        ..*s
    };
    let ociguardd = s.ociguardd.to_owned();
    if !ociguardd.exists() {
        bail!("{} not built (make build)", ociguardd.display());
    }
    let policies = w.join("policies");
    std::fs::create_dir_all(&policies)?;
    for v in VARIANTS {
        let kernel = format!("[behavior]\nmode = \"required\"\naction = \"kill\"\n{RULES}");
        let behavior = match v {
            "none" => String::new(),
            "kernel" => kernel,
            "learn" => format!("mode = \"learn\"\n{kernel}"),
            "compare" => format!("{kernel}[profile]\non_anomaly = \"report\"\n"),
            _ => format!("[behavior]\nmode = \"required\"\naction = \"deny\"\n{RULES}"),
        };
        std::fs::write(
            policies.join(format!("{v}.toml")),
            // `mode` must come before the tables.
            match behavior.strip_prefix("mode = \"learn\"\n") {
                Some(rest) => format!("name = \"{v}\"\nmode = \"learn\"\n[match]\nannotations = {{ \"org.example.beh\" = \"{v}\" }}\n{rest}"),
                None => format!("name = \"{v}\"\n[match]\nannotations = {{ \"org.example.beh\" = \"{v}\" }}\n{behavior}"),
            },
        )?;
    }
    let socket = w.join("run/monitor.sock");
    let config = w.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "runtime = \"{}\"\npolicy_dir = \"{}\"\ndecision_log = \"{}\"\nstate_dir = \"{}\"\nhook_path = \"{}\"\nmonitor_socket = \"{}\"\nspool_dir = \"{}\"\n",
            s.crun.display(),
            policies.display(),
            w.join("decisions.jsonl").display(),
            w.join("state").display(),
            s.hook.display(),
            socket.display(),
            w.join("spool").display(),
        ),
    )?;
    let pins = PathBuf::from(format!("/sys/fs/bpf/ociguard-bench-{}", std::process::id()));
    let mut monitor = Monitor::start(&ociguardd, &config, &w, &pins, &socket)?;
    let ovl = Overlay::mount(s.rootfs, &w)?;

    println!(
        "\n[behavior] inside one container, median of interleaved rounds (busybox `time -p`):"
    );
    let exec_script = format!("i=0; while [ $i -lt {EXECS} ]; do /bin/true; i=$((i+1)); done");
    let open_script =
        format!("i=0; while [ $i -lt {OPENS} ]; do : </bin/busybox; i=$((i+1)); done");
    for (what, script, target) in [
        (
            format!("{EXECS} fork+exec of /bin/true"),
            &exec_script,
            1.05,
        ),
        (format!("{OPENS} open+close"), &open_script, 1.03),
    ] {
        let mut samples: [Vec<f64>; 5] = Default::default();
        // Opens are quick: more rounds for the same confidence.
        let rounds = if script == &open_script {
            3 * ROUNDS
        } else {
            ROUNDS
        };
        for round in 0..rounds + 1 {
            for k in 0..VARIANTS.len() {
                let v = (round + k) % VARIANTS.len();
                let id = format!("beh-{round}-{v}");
                let secs = timed(
                    s.ociguard,
                    &config,
                    &w,
                    &ovl.merged,
                    VARIANTS[v],
                    &id,
                    script,
                )?;
                if round > 0 {
                    samples[v].push(secs); // the first round warms caches
                }
            }
        }
        let med: Vec<f64> = samples.iter_mut().map(|x| median(x)).collect();
        println!("  {what}:");
        for (k, v) in VARIANTS.iter().enumerate() {
            println!("    {v:<9} {:>8.3} s", med[k]);
        }
        println!(
            "    kernel / none   = {:.3}x   (target <= {target}x)",
            med[1] / med[0]
        );
        println!(
            "    fanotify / none = {:.3}x   (EPERM answers: a round trip to ociguardd per exec)",
            med[2] / med[0]
        );
        println!(
            "    learn / kernel  = {:.3}x   (recording; target <= 1.05x)",
            med[3] / med[1]
        );
        println!(
            "    compare / kernel = {:.3}x  (comparing with the profile; target <= 1.05x)",
            med[4] / med[1]
        );
    }

    host_cost(&mut monitor, &s.rootfs.join("bin/busybox"), &open_script)?;
    memory(s.ociguard, &config, &w, &ovl.merged, &pins, monitor.pid())?;
    decode_rate();
    profile_costs(&socket)?;
    drop(ovl);
    drop(monitor);
    Ok(())
}

/// The container's own time for `script`, in seconds.
fn timed(
    ociguard: &Path,
    config: &Path,
    w: &Path,
    rootfs: &Path,
    variant: &str,
    id: &str,
    script: &str,
) -> Result<f64> {
    let bundle = w.join("bundle");
    std::fs::create_dir_all(&bundle)?;
    let spec = spec(
        rootfs,
        variant,
        &["/bin/busybox", "time", "-p", "/bin/sh", "-c", script],
    );
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
    let out = Command::new(ociguard)
        .env("OCIGUARD_CONFIG", config)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(id)
        .stdin(Stdio::null())
        .output()?;
    let _ = Command::new(ociguard)
        .env("OCIGUARD_CONFIG", config)
        .args(["delete", "-f", id])
        .output();
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{variant}: ociguard run: {err}");
    }
    err.lines()
        .find_map(|l| l.strip_prefix("real "))
        .and_then(|t| t.trim().parse().ok())
        .with_context(|| format!("{variant}: no `real` time in {err:?}"))
}

/// What the enforcer's programs cost every process of the node, guarded or not: the open loop
/// run on the host with the programs attached, and detached (their link pins removed),
/// alternately.
fn host_cost(monitor: &mut Monitor, busybox: &Path, script: &str) -> Result<()> {
    let mut samples: [Vec<f64>; 2] = Default::default();
    for round in 0..7 {
        for k in 0..2 {
            let attached = (round + k) % 2 == 0;
            if attached {
                monitor.restart()?;
            } else {
                monitor.detach_programs()?;
            }
            let t = Instant::now();
            let st = Command::new(busybox).args(["sh", "-c", script]).status()?;
            if !st.success() {
                bail!("host open loop: {st}");
            }
            if round > 0 {
                samples[usize::from(!attached)].push(t.elapsed().as_secs_f64());
            }
        }
    }
    let (on, off) = (median(&mut samples[0]), median(&mut samples[1]));
    println!(
        "  on the host, not in any container: {OPENS} open+close with the programs attached {on:.3} s, detached {off:.3} s: {:.3}x",
        on / off
    );
    monitor.restart()
}

/// Bytes the kernel maps hold, and ociguardd's resident memory, per guarded container.
fn memory(
    ociguard: &Path,
    config: &Path,
    w: &Path,
    rootfs: &Path,
    pins: &Path,
    monitor: u32,
) -> Result<()> {
    const K: usize = 50;
    let before = (map_bytes(pins)?, rss_kib(monitor)?);
    let mut ids = Vec::new();
    for i in 0..K {
        let id = format!("beh-mem-{}-{i}", std::process::id());
        let bundle = w.join(format!("bundle-{id}"));
        std::fs::create_dir_all(&bundle)?;
        let spec = spec(rootfs, "kernel", &["/bin/sleep", "60"]);
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
        // Not `output()`: the detached container keeps whatever stdio it is given.
        let err = w.join(format!("{id}.err"));
        let st = Command::new(ociguard)
            .env("OCIGUARD_CONFIG", config)
            .args(["run", "-d", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err)?)
            .status()?;
        if !st.success() {
            bail!(
                "run -d {id}: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        ids.push(id);
    }
    let after = (map_bytes(pins)?, rss_kib(monitor)?);
    for id in &ids {
        let _ = Command::new(ociguard)
            .env("OCIGUARD_CONFIG", config)
            .args(["delete", "-f", id])
            .output();
    }
    println!(
        "  memory per guarded container ({K} running): kernel maps {:.0} bytes (bpftool's memlock of og_containers + og_names), ociguardd {:.1} KiB RSS",
        (after.0.saturating_sub(before.0)) as f64 / K as f64,
        (after.1.saturating_sub(before.1)) as f64 / K as f64
    );
    Ok(())
}

fn map_bytes(pins: &Path) -> Result<u64> {
    let mut total = 0;
    for map in ["og_containers", "og_names"] {
        let out = Command::new("bpftool")
            .args(["-j", "map", "show", "pinned"])
            .arg(pins.join(map))
            .output()
            .context("bpftool (scripts/host-setup.sh test installs it)")?;
        let v: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("bpftool map show {map}"))?;
        total += v["bytes_memlock"].as_u64().unwrap_or(0);
    }
    Ok(total)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")
}

/// How fast ociguardd decodes the enforcer's ring-buffer records (one core, in process).
fn decode_rate() {
    use ociguard_monitor::bpf::{KernelEvent, EVENT_LEN};
    let mut rec = vec![0u8; EVENT_LEN];
    rec[28..32].copy_from_slice(&8u32.to_ne_bytes()); // environ
    rec[36..40].copy_from_slice(&2u32.to_ne_bytes()); // open
    rec[40..44].copy_from_slice(&16u32.to_ne_bytes());
    rec[48..51].copy_from_slice(b"cat");
    rec[80..87].copy_from_slice(b"environ");
    rec[336..352].copy_from_slice(b"cat\0/proc/1/envi");
    const N: u32 = 1_000_000;
    let t = Instant::now();
    let mut n = 0u64;
    for i in 0..N {
        rec[16..20].copy_from_slice(&i.to_ne_bytes());
        if let Some(ev) = KernelEvent::decode(std::hint::black_box(&rec)) {
            n += u64::from(ev.pid & 1);
        }
    }
    let rate = f64::from(N) / t.elapsed().as_secs_f64();
    println!(
        "  ring-buffer records decoded: {:.0}/s on one core (target >= 100,000/s){}",
        rate,
        if n == 0 { " (none decoded!)" } else { "" }
    );
}

/// What profiles cost ociguardd: merging two full profiles, recording 100,000 destinations,
/// and the size of generated policies (the profile the `learn` rounds recorded, and a
/// realistic service's).
fn profile_costs(socket: &Path) -> Result<()> {
    use ociguard_policy::generate;
    use ociguard_policy::profile::{Profile, Subject, MAX_DESTINATIONS, MAX_EXECS};
    let subject = Subject::of(Some("bench"), Some("sha256:00"), None, None).context("subject")?;
    let full = |salt: u32| {
        let mut p = Profile::new(subject.clone(), 1);
        for i in 0..MAX_EXECS as u32 {
            p.add_exec(&format!("/usr/bin/prog-{salt}-{i}"), "", false, 1);
        }
        for i in 0..MAX_DESTINATIONS as u32 {
            let a = std::net::Ipv4Addr::from(0xC612_0000 + salt * 4096 + i);
            p.add_destination(6, a.into(), Some(443), 1);
        }
        p
    };
    let (a, b) = (full(1), full(2));
    const MERGES: u32 = 20;
    let t = Instant::now();
    for _ in 0..MERGES {
        let mut m = a.clone();
        m.merge(std::hint::black_box(&b));
        std::hint::black_box(&m);
    }
    println!(
        "  profile merge, two full profiles ({MAX_EXECS} programs + {MAX_DESTINATIONS} destinations each): {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0 / f64::from(MERGES)
    );
    let t = Instant::now();
    let mut p = Profile::new(subject.clone(), 1);
    for i in 0..100_000u32 {
        let a = std::net::Ipv4Addr::from(0xC612_0000 + i);
        p.add_destination(6, a.into(), Some(443), 1);
    }
    println!(
        "  100,000 new destinations recorded into one profile: {:.0} ms ({} entries after summarising to /{})",
        t.elapsed().as_secs_f64() * 1000.0,
        p.egress.len(),
        p.summarised_to().map_or(32, |s| s.0)
    );
    let opts = generate::Options {
        name: "bench",
        now: 1,
        enforcers: None,
    };
    // A realistic service: an entrypoint script, its interpreter and a few tools, its token
    // read by the app, a database, a cache, two APIs and DNS.
    let mut svc = Profile::new(subject, 1);
    svc.add_container("learn", 1);
    for prog in [
        "/docker-entrypoint.sh",
        "/bin/sh",
        "/usr/bin/env",
        "/bin/sed",
        "/bin/grep",
        "/usr/bin/id",
        "/bin/mkdir",
        "/bin/chown",
        "/usr/local/bin/gosu",
        "/usr/local/bin/python3.12",
        "/usr/bin/curl",
        "/bin/sleep",
    ] {
        svc.add_exec(prog, "", false, 1);
    }
    svc.add_secret(
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "/usr/local/bin/python3.12",
        1,
    );
    svc.add_secret("/run/secrets/db-password", "/usr/local/bin/python3.12", 1);
    for (addr, port, proto) in [
        ("10.96.0.10", 53, 17),
        ("10.96.0.10", 53, 6),
        ("10.20.3.4", 5432, 6),
        ("10.20.3.9", 6379, 6),
        ("198.18.40.1", 443, 6),
        ("198.18.41.7", 443, 6),
    ] {
        svc.add_destination(proto, addr.parse()?, Some(port), 1);
    }
    let text = generate::policy(&[svc], &opts)?;
    println!(
        "  generated policy, realistic service (12 programs, 2 secrets, 6 destinations): {} bytes, {} lines",
        text.len(),
        text.lines().count()
    );
    let resp = ociguard_monitor::client::request(
        socket,
        &ociguard_monitor::Request::Profiles {
            select: Some(IMAGE.to_owned()),
        },
        Duration::from_secs(10),
    )?;
    if let Some(learned) = resp.profiles.filter(|p| !p.is_empty()) {
        let text = generate::policy(&learned, &opts)?;
        println!(
            "  generated policy from the profile the `learn` rounds recorded ({} containers, {} programs): {} bytes",
            learned[0].containers,
            learned[0].execs.len(),
            text.len()
        );
    }
    Ok(())
}

fn spec(rootfs: &Path, variant: &str, args: &[&str]) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": args,
            "env": ["PATH=/bin"], "cwd": "/",
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]},
        "root": {"path": rootfs, "readonly": false},
        "hostname": "bench",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}],
        "annotations": {"org.example.beh": variant, "io.kubernetes.cri.image-name": IMAGE},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
    })
}

fn median(x: &mut [f64]) -> f64 {
    x.sort_by(f64::total_cmp);
    x.get(x.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A private ociguardd with its own BPF pins, removed (programs detached) when dropped.
struct Monitor {
    child: Child,
    cmd: Vec<std::ffi::OsString>,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    pins: PathBuf,
    socket: PathBuf,
}

impl Monitor {
    fn start(bin: &Path, config: &Path, w: &Path, pins: &Path, socket: &Path) -> Result<Monitor> {
        let mut cmd: Vec<std::ffi::OsString> =
            vec!["--state-dir".into(), w.join("monitor-state").into()];
        cmd.extend(["--bpf-pin-dir".into(), pins.as_os_str().to_owned()]);
        cmd.extend(["--no-containerd", "--log-level", "info"].map(Into::into));
        let log = w.join("ociguardd.log");
        let child = spawn(bin, config, &cmd, &log)?;
        let m = Monitor {
            child,
            cmd,
            bin: bin.to_owned(),
            config: config.to_owned(),
            log,
            pins: pins.to_owned(),
            socket: socket.to_owned(),
        };
        m.wait_until("its socket", || {
            std::os::unix::net::UnixStream::connect(socket).is_ok()
        })?;
        m.wait_until("its programs", || m.attached())?;
        Ok(m)
    }

    fn attached(&self) -> bool {
        std::fs::read_dir(&self.pins).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("prog-"))
        })
    }

    /// Unpin the programs' links: the kernel detaches them (the maps stay).
    fn detach_programs(&self) -> Result<()> {
        for e in std::fs::read_dir(&self.pins)?.flatten() {
            if e.file_name().to_string_lossy().starts_with("prog-") {
                std::fs::remove_dir_all(e.path())?;
            }
        }
        Ok(())
    }

    /// Kill and start again: the new ociguardd attaches the programs anew.
    fn restart(&mut self) -> Result<()> {
        if self.attached() {
            return Ok(());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.bin, &self.config, &self.cmd, &self.log)?;
        self.wait_until("its programs", || self.attached())?;
        // And its socket answers (the old one's file is still there).
        let socket = self.socket.clone();
        self.wait_until("its socket", || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        })
    }

    fn wait_until(&self, what: &str, ok: impl Fn() -> bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !ok() {
            if Instant::now() > deadline {
                bail!("ociguardd: no {what}: see {}", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn spawn(bin: &Path, config: &Path, args: &[std::ffi::OsString], log: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Ok(Command::new(bin)
        .env("OCIGUARD_CONFIG", config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

/// The busybox rootfs as an overlay's lower layer (fanotify marks a filesystem of its own).
struct Overlay {
    merged: PathBuf,
}

impl Overlay {
    fn mount(lower: &Path, w: &Path) -> Result<Overlay> {
        let (upper, work, merged) = (w.join("upper"), w.join("work"), w.join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d)?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged)
            .status()?;
        if !st.success() {
            bail!("mount overlay at {}", merged.display());
        }
        Ok(Overlay { merged })
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.merged).status();
    }
}
