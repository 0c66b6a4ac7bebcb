//! `make bench`: what ociguard costs on top of crun, measured in one interleaved run.
//!
//! Three ways to run the same `/bin/true` container, N `run -d` + `delete -f` cycles each,
//! interleaved (A B C, B C A, ...) so that drift of the machine hits all three alike:
//! 1. crun alone;
//! 2. a bare exec wrapper — a few lines of C that only `execv` crun, compiled here: the floor no
//!    exec-based wrapper can beat;
//! 3. ociguard with a policy (seccomp deny list, capability drop, no_new_privileges), injecting
//!    its built-in seccomp profile.
//!
//! Then the in-process cost of decision + rewrite on a bundle carrying Podman's full default
//! profile, and of the whole create interception (policy load, read, decide, atomic write,
//! container record, decision log).

#![allow(clippy::print_stdout)] // a report: stdout is its output (the runtime crates deny it)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    /// The ociguard binary to measure.
    #[arg(long)]
    ociguard: PathBuf,
    /// run+delete cycles per variant.
    #[arg(long, default_value_t = 60)]
    cycles: usize,
    /// In-process iterations.
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    #[arg(long, default_value = "/usr/bin/crun")]
    crun: PathBuf,
}

const POLICY: &str = r#"
name = "bench"
[match]
annotations = { "org.example.profile" = "bench" }
[seccomp]
deny = ["mkdir", "mkdirat", "ptrace", "mount"]
[process]
drop_capabilities = ["CAP_NET_RAW"]
no_new_privileges = true
[identity]
mode = "off"
"#;

fn main() -> Result<()> {
    let args = Args::parse();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rootfs = repo
        .join("test-bundles/out/rootfs")
        .canonicalize()
        .context("test-bundles/out/rootfs (run test-bundles/build.sh)")?;
    // tmpfs, like containerd's /run/containerd bundles: fsync is then what an engine pays.
    let work = tempfile::Builder::new()
        .prefix("ociguard-bench-")
        .tempdir_in("/dev/shm")?;
    let w = work.path();
    std::fs::create_dir_all(w.join("policies"))?;
    std::fs::write(w.join("policies/bench.toml"), POLICY)?;
    std::fs::write(
        w.join("config.toml"),
        format!(
            "runtime = \"{}\"\npolicy_dir = \"{}\"\ndecision_log = \"{}\"\nstate_dir = \"{}\"\n",
            args.crun.display(),
            w.join("policies").display(),
            w.join("decisions.jsonl").display(),
            w.join("state").display()
        ),
    )?;
    let wrapper = build_wrapper(w, &args.crun)?;
    let spec = bench_spec(&rootfs);
    let spec_bytes = serde_json::to_vec(&spec)?;
    let bundle = w.join("bundle");
    std::fs::create_dir_all(&bundle)?;
    let root = w.join("root");

    eprintln!("bench: {} cycles x 3 variants, interleaved", args.cycles);
    let variants: [(&str, &Path); 3] = [
        ("crun", &args.crun),
        ("exec-wrapper", &wrapper),
        ("ociguard", &args.ociguard),
    ];
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for i in 0..args.cycles + 3 {
        for k in 0..3 {
            let v = (i + k) % 3;
            // Engines hand every create a fresh bundle: restore the original config each time.
            std::fs::write(bundle.join("config.json"), &spec_bytes)?;
            let id = format!("bench-{i}-{v}");
            let t = cycle(variants[v].1, &root, &bundle, &id, &w.join("config.toml"))?;
            if i >= 3 {
                // the first rounds warm caches and are discarded
                samples[v].push(t);
            }
        }
    }
    let med: Vec<f64> = samples.iter_mut().map(|s| percentile(s, 50.0)).collect();
    println!(
        "run+delete of /bin/true, median of {} cycles each:",
        args.cycles
    );
    for (k, (name, _)) in variants.iter().enumerate() {
        println!(
            "  {name:<13} {:>8.2} ms  (p90 {:.2} ms)",
            med[k],
            percentile(&mut samples[k], 90.0)
        );
    }
    println!("  ociguard / crun          = {:.3}x", med[2] / med[0]);
    println!(
        "  ociguard / exec-wrapper  = {:.3}x   (target <= 1.05x)",
        med[2] / med[1]
    );
    println!("  exec-wrapper / crun      = {:.3}x", med[1] / med[0]);

    in_process(&args, &repo, w)?;
    Ok(())
}

fn in_process(args: &Args, repo: &Path, w: &Path) -> Result<()> {
    use ociguard_policy::{decide, PolicySet};
    let podman = repo.join("test-bundles/out/podman/config.json");
    let mut spec: Value = match std::fs::read(&podman) {
        Ok(b) => serde_json::from_slice(&b)?,
        Err(_) => {
            println!(
                "skip: decision+rewrite on Podman's profile: {} not captured",
                podman.display()
            );
            return Ok(());
        }
    };
    spec["annotations"]["org.example.profile"] = json!("bench");
    let bytes = serde_json::to_vec(&spec)?;
    let set = PolicySet::load_dir(&w.join("policies")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = Path::new("config.json");
    let mut decide_t = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        let t = Instant::now();
        let r = decide(&bytes, path, &set)?;
        std::hint::black_box(&r.bytes);
        decide_t.push(t.elapsed());
    }
    let mut load_t = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        let t = Instant::now();
        let s = PolicySet::load_dir(&w.join("policies")).map_err(|e| anyhow::anyhow!("{e}"))?;
        std::hint::black_box(&s);
        load_t.push(t.elapsed());
    }
    // The whole interception as `ociguard create` runs it, minus process start-up and exec.
    let config = ociguard_policy::RuntimeConfig::load(&w.join("config.toml"))?;
    let logger = ociguard_shim::logging::Logger::default();
    let runtime = args.crun.clone();
    let ctx = ociguard_shim::Context {
        config: &config,
        runtime: &runtime,
        logger: &logger,
        root: None,
    };
    let bundle = w.join("inproc-bundle");
    std::fs::create_dir_all(&bundle)?;
    let mut create_t = Vec::with_capacity(args.iterations);
    for i in 0..args.iterations {
        std::fs::write(bundle.join("config.json"), &bytes)?;
        let t = Instant::now();
        ociguard_shim::create::intercept(&ctx, "create", &format!("c{i}"), &bundle)?;
        create_t.push(t.elapsed());
    }
    println!(
        "in-process, Podman's full default profile ({} bytes), {} iterations:",
        bytes.len(),
        args.iterations
    );
    for (name, s) in [
        ("decision+rewrite", &mut decide_t),
        ("policy dir load (1 file)", &mut load_t),
        ("whole create interception", &mut create_t),
    ] {
        println!(
            "  {name:<26} median {:>7.1} us  p99 {:>7.1} us",
            percentile(s, 50.0) * 1000.0,
            percentile(s, 99.0) * 1000.0
        );
    }
    println!("  (target: decision+rewrite median < 300 us)");
    label_resolution(args, w)?;
    Ok(())
}

/// containers/storage label lookup on a store shaped like a busy node's (200 containers,
/// 50 images). "cold" drops the page cache first (needs root), "warm" is the steady state.
fn label_resolution(args: &Args, w: &Path) -> Result<()> {
    use ociguard_shim::labels;
    let graph = w.join("storage");
    let cdir = graph.join("overlay-containers");
    let idir = graph.join("overlay-images");
    std::fs::create_dir_all(&idir)?;
    let image_id = |i: usize| format!("{i:064x}");
    let containers: Vec<Value> = (0..200)
        .map(|i| json!({"id": format!("{:064x}", 1_000_000 + i), "names": [format!("c{i}")],
            "image": image_id(i % 50), "layer": format!("{i:064x}"), "metadata": "{\"image-name\":\"x\"}",
            "created": "2026-11-27T00:00:00Z", "flags": {"MountLabel": "", "ProcessLabel": ""}}))
        .collect();
    let target = format!("{:064x}", 1_000_000 + 199);
    std::fs::create_dir_all(cdir.join(&target).join("userdata"))?;
    std::fs::write(
        cdir.join("containers.json"),
        serde_json::to_vec(&containers)?,
    )?;
    let images: Vec<Value> = (0..50)
        .map(|i| {
            json!({"id": image_id(i), "digest": format!("sha256:{:064x}", i + 7),
            "names": [format!("registry.example.com/team/app{i}:1.0")], "layer": image_id(i),
            "big-data-names": ["manifest"], "created": "2026-11-27T00:00:00Z"})
        })
        .collect();
    std::fs::write(idir.join("images.json"), serde_json::to_vec(&images)?)?;
    for i in 0..50 {
        use base64::Engine as _;
        let d = idir.join(image_id(i));
        std::fs::create_dir_all(&d)?;
        let key =
            base64::engine::general_purpose::STANDARD.encode(format!("sha256:{}", image_id(i)));
        std::fs::write(
            d.join(format!("={key}")),
            serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
                "config": {"Labels": {"org.ociguard.profile": "web", "maintainer": "team"}},
                "rootfs": {"type": "layers", "diff_ids": []}}))?,
        )?;
    }
    let bundle = cdir.join(&target).join("userdata");
    let sources = ociguard_policy::config::LabelSources::default();
    let facts = ociguard_policy::select::Facts::default();
    let mut warm = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        let t = Instant::now();
        let info = labels::resolve(&bundle, &facts, &sources, w)?;
        std::hint::black_box(&info);
        warm.push(t.elapsed());
    }
    let mut cold = Vec::new();
    let can_drop = std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok();
    if can_drop {
        for _ in 0..20 {
            std::fs::write("/proc/sys/vm/drop_caches", "1")?;
            let t = Instant::now();
            std::hint::black_box(labels::resolve(&bundle, &facts, &sources, w)?);
            cold.push(t.elapsed());
        }
    }
    println!("label resolution, containers/storage (200 containers, 50 images):");
    println!(
        "  warm (page cache)          median {:>7.1} us  p99 {:>7.1} us",
        percentile(&mut warm, 50.0) * 1000.0,
        percentile(&mut warm, 99.0) * 1000.0
    );
    if can_drop {
        println!(
            "  cold (caches dropped)      median {:>7.1} us  p99 {:>7.1} us",
            percentile(&mut cold, 50.0) * 1000.0,
            percentile(&mut cold, 99.0) * 1000.0
        );
    } else {
        println!("  cold: skip (cannot drop the page cache: not root)");
    }
    println!("  (targets: cached < 100 us, cold containers/storage < 1 ms)");
    Ok(())
}

/// One `run -d` + `delete -f`, in ms.
fn cycle(bin: &Path, root: &Path, bundle: &Path, id: &str, config: &Path) -> Result<Duration> {
    let t = Instant::now();
    let run = Command::new(bin)
        .env("OCIGUARD_CONFIG", config)
        .arg("--root")
        .arg(root)
        .args(["run", "-d", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()?;
    if !run.status.success() {
        bail!(
            "{} run: {}",
            bin.display(),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let del = Command::new(bin)
        .env("OCIGUARD_CONFIG", config)
        .arg("--root")
        .arg(root)
        .args(["delete", "-f", id])
        .stdin(Stdio::null())
        .output()?;
    if !del.status.success() {
        bail!(
            "{} delete: {}",
            bin.display(),
            String::from_utf8_lossy(&del.stderr)
        );
    }
    Ok(t.elapsed())
}

fn percentile(s: &mut [Duration], p: f64) -> f64 {
    s.sort();
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i].as_secs_f64() * 1000.0
}

fn build_wrapper(dir: &Path, crun: &Path) -> Result<PathBuf> {
    let src = dir.join("wrapper.c");
    let bin = dir.join("exec-wrapper");
    std::fs::write(
        &src,
        format!(
            "#include <unistd.h>\nint main(int argc, char **argv) {{ (void)argc; argv[0] = \"{0}\"; execv(\"{0}\", argv); return 127; }}\n",
            crun.display()
        ),
    )?;
    let st = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .context("gcc (apt-get install gcc)")?;
    if !st.success() {
        bail!("gcc failed");
    }
    Ok(bin)
}

fn bench_spec(rootfs: &Path) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"],
            "env": ["PATH=/bin"], "cwd": "/",
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"],
                "effective": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"], "permitted": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]},
        "root": {"path": rootfs, "readonly": true},
        "hostname": "bench",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}],
        "annotations": {"org.example.profile": "bench"},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
    })
}
