//! deploy/kubernetes/ without a cluster (none is available to the tests): the installer entry
//! script against a node root in a temporary directory (containerd's shipped and default configs,
//! CRI-O, no engine, the opt-in engine restart), the policy sync against a ConfigMap volume laid
//! out the way kubelet lays it out (`..data` swapped on update), and the manifests' references to
//! each other. The scripts run under the host's `sh` and, when it is there, under busybox with
//! only its applets on PATH, which is what the image (deploy/kubernetes/Dockerfile) gives them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

#[path = "../../monitor/tests/common/bins.rs"]
mod bins;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const CTL: &str = env!("CARGO_BIN_EXE_ociguardctl");
const BINARIES: [&str; 4] = ["ociguard", "ociguard-hook", "ociguardd", "ociguardctl"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn k8s() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// A shell to run the scripts with, and the PATH it gets.
struct Shell {
    name: &'static str,
    program: PathBuf,
    path: String,
    _applets: Option<tempfile::TempDir>,
}

/// The host's sh, and busybox with nothing but its applets (as in the image) when installed.
fn shells() -> Vec<Shell> {
    let mut shells = vec![Shell {
        name: "sh",
        program: PathBuf::from("/bin/sh"),
        path: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        _applets: None,
    }];
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    match busybox {
        None => eprintln!("skip: busybox not installed: scripts not run under busybox (scripts/host-setup.sh test installs busybox-static)"),
        Some(busybox) => {
            let dir = tempfile::tempdir().unwrap();
            let list = Command::new(&busybox).arg("--list").output().unwrap();
            for applet in String::from_utf8_lossy(&list.stdout).lines() {
                std::os::unix::fs::symlink(&busybox, dir.path().join(applet)).unwrap();
            }
            shells.push(Shell {
                name: "busybox",
                program: dir.path().join("sh"),
                path: dir.path().display().to_string(),
                _applets: Some(dir),
            });
        }
    }
    shells
}

/// `script` run by `shell` with only PATH and `env` in its environment.
fn run(shell: &Shell, script: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let out = Command::new(&shell.program)
        .arg(k8s().join(script))
        .args(args)
        .env_clear()
        .env("PATH", &shell.path)
        .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!(
        "[{}] {script} {args:?}: {}\n{}",
        shell.name,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The binaries to install, as the image has them in one directory.
fn binaries() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for b in BINARIES {
        let path = if b == "ociguardctl" {
            PathBuf::from(CTL)
        } else {
            bins::sibling_bin(b)
        };
        std::os::unix::fs::symlink(path, dir.path().join(b)).unwrap();
    }
    dir
}

/// Debian 12's /etc/containerd/config.toml as the package ships it.
const DEBIAN_CONTAINERD: &str = "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      bin_dir = \"/usr/lib/cni\"\n      conf_dir = \"/etc/cni/net.d\"\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"/var/lib/containerd/opt\"\n";

/// containerd configs a node may have: the host's, Debian's shipped one, `containerd config
/// default` (the full one, with a runc runtime of its own).
fn containerd_configs() -> Vec<(&'static str, String)> {
    let mut configs = vec![("debian", DEBIAN_CONTAINERD.to_owned())];
    if let Ok(text) = std::fs::read_to_string("/etc/containerd/config.toml") {
        configs.push(("/etc/containerd/config.toml", text));
    }
    match Command::new("containerd")
        .args(["config", "default"])
        .output()
    {
        Ok(out) if out.status.success() => configs.push((
            "containerd config default",
            String::from_utf8(out.stdout).unwrap(),
        )),
        _ => eprintln!("skip: containerd not installed: `containerd config default` not tried"),
    }
    configs
}

type Snapshot = BTreeMap<PathBuf, (String, Vec<u8>, u32, i64, i64, u64)>;

/// Every entry under `root`: type, bytes or link target, mode, mtime and inode, to show that a
/// run changed nothing at all. Directories' mtimes only with `dir_mtimes` (a sync that stages
/// and drops a set changes its parent's mtime, and nothing else).
fn snapshot(root: &Path, dir_mtimes: bool) -> Snapshot {
    fn walk(root: &Path, dir: &Path, dir_mtimes: bool, out: &mut Snapshot) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let (kind, bytes) = if meta.is_symlink() {
                (
                    "link",
                    std::fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if meta.is_dir() {
                ("dir", Vec::new())
            } else {
                ("file", std::fs::read(&path).unwrap())
            };
            let (mtime, mtime_nsec) = if meta.is_dir() && !dir_mtimes {
                (0, 0)
            } else {
                (meta.mtime(), meta.mtime_nsec())
            };
            out.insert(
                path.strip_prefix(root).unwrap().to_owned(),
                (
                    kind.into(),
                    bytes,
                    meta.mode(),
                    mtime,
                    mtime_nsec,
                    meta.ino(),
                ),
            );
            if meta.is_dir() {
                walk(root, &path, dir_mtimes, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, dir_mtimes, &mut out);
    out
}

fn no_temporary_files(root: &Path) {
    for path in snapshot(root, false).keys() {
        let name = path.to_string_lossy();
        assert!(
            !name.contains("ociguard-tmp")
                && !name.contains("ociguard-before")
                && !name.contains(".staging-"),
            "left behind: {name}"
        );
    }
}

fn install_env<'a>(
    root: &'a Path,
    src: &'a Path,
    config: &'a Path,
) -> Vec<(&'static str, &'a Path)> {
    vec![
        ("OCIGUARD_ROOT", root),
        ("OCIGUARD_SRC", src),
        ("OCIGUARD_CONFIG_SOURCE", config),
    ]
}

#[test]
fn install_on_a_containerd_node_is_complete_and_idempotent() {
    let src = binaries();
    let shipped_config = repo().join("deploy/config.toml");
    for shell in shells() {
        for (what, containerd_config) in containerd_configs() {
            eprintln!("[{}] containerd config: {what}", shell.name);
            let root = tempfile::tempdir().unwrap();
            let r = root.path();
            std::fs::create_dir_all(r.join("etc/containerd")).unwrap();
            std::fs::write(r.join("etc/containerd/config.toml"), &containerd_config).unwrap();
            // An empty /etc/crio, as the DaemonSet's unchecked hostPath makes on containerd nodes.
            std::fs::create_dir_all(r.join("etc/crio")).unwrap();
            let env = install_env(r, src.path(), &shipped_config);

            let out = run(&shell, "install.sh", &[], &env);
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(
                stderr(&out).contains("restart it on the node"),
                "{}",
                stderr(&out)
            );
            for b in BINARIES {
                let installed = r.join("usr/local/bin").join(b);
                let meta = std::fs::metadata(&installed).unwrap();
                assert!(meta.is_file(), "{b}");
                assert_eq!(meta.mode() & 0o7777, 0o755, "{b}");
                assert_eq!(
                    std::fs::read(&installed).unwrap(),
                    std::fs::read(src.path().join(b)).unwrap(),
                    "{b}"
                );
            }
            // The installed ociguardctl runs (a static binary, whole).
            let version = Command::new(r.join("usr/local/bin/ociguardctl"))
                .arg("--help")
                .output()
                .unwrap();
            assert!(version.status.success());
            assert_eq!(
                std::fs::read(r.join("etc/ociguard/config.toml")).unwrap(),
                std::fs::read(&shipped_config).unwrap()
            );
            assert_eq!(
                std::fs::metadata(r.join("etc/ociguard/config.toml"))
                    .unwrap()
                    .mode()
                    & 0o777,
                0o644
            );

            let text = std::fs::read_to_string(r.join("etc/containerd/config.toml")).unwrap();
            assert!(
                !text.contains(&r.display().to_string()),
                "the node root leaked into the engine config:\n{text}"
            );
            let doc: toml::Value = toml::from_str(&text).unwrap();
            let runtimes = &doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
            assert_eq!(
                runtimes["ociguard"]["options"]["BinaryName"].as_str(),
                Some("/usr/local/bin/ociguard"),
                "{text}"
            );
            assert_eq!(
                runtimes["ociguard"]["runtime_type"].as_str(),
                Some("io.containerd.runc.v2")
            );
            assert_eq!(
                runtimes["runc"]["runtime_type"].as_str(),
                Some("io.containerd.runc.v2"),
                "{text}"
            );
            assert!(
                !r.join("etc/crio/crio.conf.d").exists(),
                "an empty /etc/crio is not CRI-O"
            );
            no_temporary_files(r);

            // A second run changes nothing: same bytes, modes, mtimes, inodes.
            let before = snapshot(r, true);
            let out = run(&shell, "install.sh", &[], &env);
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(stderr(&out).contains("containerd already runs ociguard: nothing to restart"));
            assert_eq!(snapshot(r, true), before, "second run changed the node");

            // An operator's config is kept; an outdated binary is replaced by a new file renamed
            // over it (a new inode: an engine exec'ing it meanwhile had the old one, whole).
            std::fs::write(
                r.join("etc/ociguard/config.toml"),
                "runtime = \"/usr/bin/crun\"\n",
            )
            .unwrap();
            let bin = r.join("usr/local/bin/ociguard");
            std::fs::write(&bin, b"old").unwrap();
            let old_ino = std::fs::metadata(&bin).unwrap().ino();
            let out = run(&shell, "install.sh", &[r.to_str().unwrap()], &env[1..]);
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(
                std::fs::read_to_string(r.join("etc/ociguard/config.toml")).unwrap(),
                "runtime = \"/usr/bin/crun\"\n"
            );
            assert_ne!(std::fs::metadata(&bin).unwrap().ino(), old_ino);
            assert_eq!(
                std::fs::read(&bin).unwrap(),
                std::fs::read(src.path().join("ociguard")).unwrap()
            );
            no_temporary_files(r);
        }
    }
}

#[test]
fn install_on_a_crio_node_writes_the_drop_in() {
    let src = binaries();
    let shipped_config = repo().join("deploy/config.toml");
    for shell in shells() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc/crio")).unwrap();
        std::fs::write(
            r.join("etc/crio/crio.conf"),
            "[crio.runtime]\ndefault_runtime = \"crun\"\n",
        )
        .unwrap();
        let env = install_env(r, src.path(), &shipped_config);
        let out = run(&shell, "install.sh", &[], &env);
        assert!(out.status.success(), "{}", stderr(&out));
        let drop_in =
            std::fs::read_to_string(r.join("etc/crio/crio.conf.d/50-ociguard.conf")).unwrap();
        let doc: toml::Value = toml::from_str(&drop_in).unwrap();
        let rt = &doc["crio"]["runtime"]["runtimes"]["ociguard"];
        assert_eq!(
            rt["runtime_path"].as_str(),
            Some("/usr/local/bin/ociguard"),
            "{drop_in}"
        );
        assert_eq!(
            std::fs::read_to_string(r.join("etc/crio/crio.conf")).unwrap(),
            "[crio.runtime]\ndefault_runtime = \"crun\"\n",
            "the engine's own config is not touched"
        );
        assert!(!r.join("etc/containerd").exists());
        no_temporary_files(r);
        let before = snapshot(r, true);
        let out = run(&shell, "install.sh", &[], &env);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("CRI-O already runs ociguard"));
        assert_eq!(snapshot(r, true), before, "second run changed the node");
    }
}

#[test]
fn install_without_an_engine_fails_and_writes_nothing() {
    let src = binaries();
    let shipped_config = repo().join("deploy/config.toml");
    for shell in shells() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // containerd's directory without a config file is no config to register with.
        std::fs::create_dir_all(r.join("etc/containerd")).unwrap();
        let before = snapshot(r, true);
        let out = run(
            &shell,
            "install.sh",
            &[],
            &install_env(r, src.path(), &shipped_config),
        );
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("no container engine config on the node"),
            "{}",
            stderr(&out)
        );
        assert_eq!(snapshot(r, true), before);
    }
}

#[test]
fn install_restarts_the_engine_only_when_allowed_and_changed() {
    let src = binaries();
    let shipped_config = repo().join("deploy/config.toml");
    let shell = shells().remove(0);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc/containerd")).unwrap();
    std::fs::write(r.join("etc/containerd/config.toml"), DEBIAN_CONTAINERD).unwrap();
    // An nsenter that records its arguments instead of entering the host.
    let fake = tempfile::tempdir().unwrap();
    let record = fake.path().join("nsenter.args");
    let nsenter = fake.path().join("nsenter");
    std::fs::write(
        &nsenter,
        format!("#!/bin/sh\necho \"$*\" >> {}\n", record.display()),
    )
    .unwrap();
    std::fs::set_permissions(&nsenter, std::fs::Permissions::from_mode(0o755)).unwrap();
    let shell = Shell {
        path: format!("{}:{}", fake.path().display(), shell.path),
        ..shell
    };
    let mut env = install_env(r, src.path(), &shipped_config);
    env.push(("OCIGUARD_RESTART_ENGINE", Path::new("1")));
    let out = run(&shell, "install.sh", &[], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&record).unwrap(),
        "-t 1 -m -u -i -n -p -- systemctl restart containerd\n"
    );
    let out = run(&shell, "install.sh", &[], &env);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(&record).unwrap().lines().count(),
        1,
        "nothing changed: no second restart"
    );
}

/// A ConfigMap volume as kubelet's AtomicWriter lays it out: the payload in a timestamped
/// directory, `..data` pointing at it, each key a symlink through `..data`. An update writes a
/// new payload directory, swaps `..data` by rename and removes the old payload.
struct ConfigMapVolume {
    dir: tempfile::TempDir,
    version: u32,
}

impl ConfigMapVolume {
    fn new(files: &[(String, String)]) -> Self {
        let mut v = ConfigMapVolume {
            dir: tempfile::tempdir().unwrap(),
            version: 0,
        };
        v.update(files);
        v
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn update(&mut self, files: &[(String, String)]) {
        let d = self.dir.path();
        self.version += 1;
        let payload = format!(
            "..2025_01_01_00_00_{:02}.{}",
            self.version,
            1000 + self.version
        );
        std::fs::create_dir(d.join(&payload)).unwrap();
        for (name, text) in files {
            std::fs::write(d.join(&payload).join(name), text).unwrap();
        }
        let old = std::fs::read_link(d.join("..data")).ok();
        std::os::unix::fs::symlink(&payload, d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        for entry in std::fs::read_dir(d).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !files.iter().any(|(n, _)| *n == name) {
                std::fs::remove_file(d.join(&name)).unwrap();
            }
        }
        for (name, _) in files {
            if std::fs::symlink_metadata(d.join(name)).is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), d.join(name)).unwrap();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(d.join(old)).unwrap();
        }
    }
}

fn shipped_policies() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(repo().join("deploy/policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 2);
    files
}

/// The node's policies as the shim would load them: `ociguardctl policy check` through the link.
fn node_policies_valid(root: &Path) -> String {
    let out = Command::new(CTL)
        .args(["policy", "check"])
        .arg(root.join("etc/ociguard/policies"))
        .env("OCIGUARD_CONFIG", root.join("etc/ociguard/config.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

/// `name -> text` of the node's policy files, read through the link (None: not there yet).
fn try_node_policies(root: &Path) -> Option<BTreeMap<String, String>> {
    std::fs::read_dir(root.join("etc/ociguard/policies"))
        .ok()?
        .map(|e| {
            let e = e.ok()?;
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), text))
        })
        .collect()
}

fn node_policies(root: &Path) -> BTreeMap<String, String> {
    try_node_policies(root).expect("the node's policies")
}

fn as_map(files: &[(String, String)]) -> BTreeMap<String, String> {
    files.iter().cloned().collect()
}

fn link_target(root: &Path) -> PathBuf {
    std::fs::read_link(root.join("etc/ociguard/policies")).unwrap()
}

#[test]
fn policy_sync_publishes_only_whole_valid_sets() {
    for shell in shells() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let mut files = shipped_policies();
        let mut cm = ConfigMapVolume::new(&files);
        let source = cm.path().to_owned();
        let env = [
            ("OCIGUARD_ROOT", r),
            ("OCIGUARD_POLICY_SOURCE", source.as_path()),
            ("OCIGUARD_CTL", Path::new(CTL)),
        ];
        let sync = |env: &[(&str, &Path)]| run(&shell, "sync-policies.sh", &["--once"], env);

        // First sync: a relative link into policies.d, the ConfigMap's files, all valid.
        let out = sync(&env);
        assert!(out.status.success(), "{}", stderr(&out));
        let first = link_target(r);
        assert!(
            first.starts_with("policies.d") && first.is_relative(),
            "{first:?}"
        );
        assert_eq!(node_policies(r), as_map(&files));
        assert!(node_policies_valid(r).contains(&format!("{} policies valid", files.len())));
        for (name, _) in &files {
            let meta = std::fs::metadata(r.join("etc/ociguard/policies").join(name)).unwrap();
            assert_eq!(meta.mode() & 0o777, 0o644);
        }

        // Again, unchanged: no new generation.
        let out = sync(&env);
        assert!(out.status.success());
        assert!(stderr(&out).contains("already has this set"));
        assert_eq!(link_target(r), first);
        let before = snapshot(r, false);

        // Invalid versions: the node keeps its policies (same link, same bytes) and says why.
        let mut broken = files.clone();
        broken[0].1.push_str("\nno_such_key = 1\n");
        let mut duplicate = files.clone();
        duplicate.push(("zz-copy.toml".into(), files[0].1.clone()));
        for (what, bad, expect) in [
            ("an unknown key", broken, "no_such_key"),
            (
                "two files of one name, each valid alone",
                duplicate,
                "zz-copy.toml",
            ),
            ("no policy at all", Vec::new(), "holds no *.toml policy"),
        ] {
            eprintln!("[{}] invalid: {what}", shell.name);
            cm.update(&bad);
            let out = sync(&env);
            assert!(!out.status.success(), "{what}");
            let err = stderr(&out);
            assert!(
                err.contains("refused") && err.contains(expect),
                "{what}: {err}"
            );
            assert_eq!(
                snapshot(r, false),
                before,
                "{what}: the node's policies changed"
            );
        }

        // A fixed version is synced.
        files[0].1.push_str("\n# fixed\n");
        cm.update(&files);
        let out = sync(&env);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_ne!(link_target(r), first);
        assert_eq!(node_policies(r), as_map(&files));
        node_policies_valid(r);
        no_temporary_files(r);

        // Old generations go, but the current one and the two before it stay.
        for i in 0..3 {
            files[0].1.push_str(&format!("# {i}\n"));
            cm.update(&files);
            assert!(sync(&env).status.success());
        }
        let generations = std::fs::read_dir(r.join("etc/ociguard/policies.d"))
            .unwrap()
            .count();
        assert_eq!(generations, 3);
        assert_eq!(node_policies(r), as_map(&files));
    }
}

#[test]
fn policy_sync_leaves_a_real_policy_directory_alone_unless_told() {
    let shell = shells().remove(0);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let files = shipped_policies();
    let cm = ConfigMapVolume::new(&files);
    let dir = r.join("etc/ociguard/policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("default.toml"), "name = \"default\"\n").unwrap();
    let before = snapshot(r, false);
    let env = [
        ("OCIGUARD_ROOT", r),
        ("OCIGUARD_POLICY_SOURCE", cm.path()),
        ("OCIGUARD_CTL", Path::new(CTL)),
    ];
    let out = run(&shell, "sync-policies.sh", &["--once"], &env);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is a directory, not the symlink"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(r, false), before);

    let mut env = env.to_vec();
    env.push(("OCIGUARD_SYNC_TAKEOVER", Path::new("1")));
    let out = run(&shell, "sync-policies.sh", &["--once"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node_policies(r), as_map(&files));
    let aside: Vec<_> = std::fs::read_dir(r.join("etc/ociguard"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("policies.pre-sync-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
}

/// Without --once: a ConfigMap update is picked up by polling `..data`.
#[test]
fn policy_sync_follows_configmap_updates() {
    let shell = shells().remove(0);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let mut files = shipped_policies();
    let mut cm = ConfigMapVolume::new(&files);
    let log = std::fs::File::create(r.join("sync.log")).unwrap();
    let mut child = Command::new(&shell.program)
        .arg(k8s().join("sync-policies.sh"))
        .env_clear()
        .env("PATH", &shell.path)
        .env("OCIGUARD_ROOT", r)
        .env("OCIGUARD_POLICY_SOURCE", cm.path())
        .env("OCIGUARD_CTL", CTL)
        .env("OCIGUARD_SYNC_INTERVAL", "0.2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "{what}; log:\n{}",
                std::fs::read_to_string(r.join("sync.log")).unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("first sync", &|| {
        try_node_policies(r) == Some(as_map(&files))
    });
    let first = link_target(r);

    // An invalid update: reported, not applied, not retried at every poll.
    let mut bad = files.clone();
    bad[0].1.push_str("\nno_such_key = 1\n");
    cm.update(&bad);
    wait_for("refusal", &|| {
        std::fs::read_to_string(r.join("sync.log"))
            .unwrap()
            .contains("no_such_key")
    });
    std::thread::sleep(Duration::from_secs(1));
    let log_text = std::fs::read_to_string(r.join("sync.log")).unwrap();
    assert_eq!(log_text.matches("refused").count(), 1, "{log_text}");
    assert_eq!(link_target(r), first);

    files[0].1.push_str("\n# updated\n");
    cm.update(&files);
    wait_for("update", &|| try_node_policies(r) == Some(as_map(&files)));
    assert_ne!(link_target(r), first);

    // Stopped by the pid this test started.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    );
    let _ = child.wait();
}

/// Every document of a YAML file, as JSON, parsed by python3's yaml module (no YAML crate is in
/// the workspace). None when python3 or its yaml module is missing.
fn yaml_documents(path: &Path) -> Option<Vec<Value>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None], sys.stdout)",
        ])
        .arg(path)
        .output()
        .ok()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No module named 'yaml'") {
        return None;
    }
    assert!(out.status.success(), "{}: {err}", path.display());
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn str_of<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} missing in {v}"))
}

/// The environment variable `name` of a container spec.
fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

fn mount_path<'a>(container: &'a Value, volume: &str) -> Option<&'a str> {
    container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == volume)
        .and_then(|m| m["mountPath"].as_str())
}

/// The manifests parse and refer to each other consistently: the names a DaemonSet uses exist,
/// the ConfigMap is deploy/policies, the scripts' environment matches the mounts.
#[test]
fn manifests_parse_and_agree() {
    let mut yaml_files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![repo().join("deploy")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                yaml_files.push(p);
            }
        }
    }
    yaml_files.sort();
    let mut objects: Vec<(PathBuf, Value)> = Vec::new();
    for path in &yaml_files {
        let Some(docs) = yaml_documents(path) else {
            eprintln!("skip: python3 with its yaml module (python3-yaml) not installed: manifests not checked");
            return;
        };
        objects.extend(docs.into_iter().map(|d| (path.clone(), d)));
    }
    let find = |kind: &str| -> Vec<&Value> {
        objects
            .iter()
            .filter(|(_, o)| o["kind"] == kind)
            .map(|(_, o)| o)
            .collect()
    };
    let named = |kind: &str, namespace: Option<&str>, name: &str| {
        find(kind).into_iter().any(|o| {
            o["metadata"]["name"] == name && o["metadata"]["namespace"].as_str() == namespace
        })
    };

    // kustomization.yaml lists every manifest of the directory.
    let kustomization = find("Kustomization");
    assert_eq!(kustomization.len(), 1);
    let mut resources: Vec<&str> = kustomization[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    resources.sort();
    let mut manifests: Vec<String> = yaml_files
        .iter()
        .filter(|p| p.parent() == Some(k8s().as_path()))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "kustomization.yaml")
        .collect();
    manifests.sort();
    assert_eq!(resources, manifests);
    for (path, o) in &objects {
        if o["kind"] != "Kustomization" {
            str_of(o, "/apiVersion");
            str_of(o, "/metadata/name");
            assert!(
                path.starts_with(k8s()),
                "{} is not under deploy/kubernetes",
                path.display()
            );
        }
    }

    // One RuntimeClass, whose handler is what `ociguardctl setup` registers.
    let classes = find("RuntimeClass");
    assert_eq!(classes.len(), 1);
    assert_eq!(str_of(classes[0], "/handler"), "ociguard");

    let daemonsets = find("DaemonSet");
    assert_eq!(daemonsets.len(), 1);
    let ds = daemonsets[0];
    let ns = str_of(ds, "/metadata/namespace");
    assert!(named("Namespace", None, ns), "namespace {ns}");
    let pod = &ds["spec"]["template"]["spec"];
    let sa = str_of(pod, "/serviceAccountName");
    assert!(named("ServiceAccount", Some(ns), sa), "ServiceAccount {sa}");
    assert_eq!(pod["hostPID"], true);
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "selector label {k}");
    }

    // Volumes: every mount names one, every one is mounted, ConfigMaps exist.
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (str_of(v, "/name"), v))
        .collect();
    let inits = pod["initContainers"].as_array().unwrap();
    let mains = pod["containers"].as_array().unwrap();
    let containers: Vec<&Value> = inits.iter().chain(mains).collect();
    let mut used = std::collections::BTreeSet::new();
    for c in &containers {
        for m in c["volumeMounts"].as_array().unwrap() {
            let name = str_of(m, "/name");
            assert!(
                volumes.contains_key(name),
                "{}: volume {name} is not defined",
                c["name"]
            );
            used.insert(name);
        }
    }
    assert_eq!(
        used,
        volumes.keys().copied().collect(),
        "a volume no container mounts"
    );
    for v in volumes.values() {
        if let Some(cm) = v.pointer("/configMap/name").and_then(Value::as_str) {
            assert!(named("ConfigMap", Some(ns), cm), "ConfigMap {cm}");
        }
    }
    // One image for all, the one kustomization.yaml rewrites and `make image` builds.
    let kustomized = str_of(kustomization[0], "/images/0/name");
    for c in &containers {
        let image = str_of(c, "/image");
        assert_eq!(image.split(':').next(), Some(kustomized), "{image}");
    }
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    let default_image = str_of(containers[0], "/image");
    let built = makefile
        .lines()
        .filter_map(|l| l.strip_prefix("IMAGE"))
        .filter_map(|l| l.trim_start().strip_prefix("?="))
        .map(str::trim)
        .next();
    assert_eq!(built, Some(default_image), "the image `make image` builds");

    let container = |name: &str| {
        *containers
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    };
    // The scripts the pod runs are the ones here, and the image has them.
    let dockerfile = std::fs::read_to_string(k8s().join("Dockerfile")).unwrap();
    for (name, script) in [
        ("install", "install.sh"),
        ("policy-sync", "sync-policies.sh"),
    ] {
        let c = container(name);
        assert_eq!(
            c["command"][0].as_str(),
            Some(format!("/usr/local/share/ociguard/{script}").as_str())
        );
        assert!(
            makefile.contains(&format!("deploy/kubernetes/{script}")),
            "make image stages {script}"
        );
        assert!(dockerfile.contains("COPY share/ /usr/local/share/ociguard/"));
    }
    assert_eq!(
        str_of(container("ociguardd"), "/command/0"),
        "/usr/local/bin/ociguardd"
    );

    // The installer: the node's root where the host paths are mounted, the prefix's bin.
    let install = container("install");
    let root = env_of(install, "OCIGUARD_ROOT").unwrap();
    let prefix = env_of(install, "OCIGUARD_PREFIX").unwrap();
    assert_eq!(
        env_of(install, "OCIGUARD_RESTART_ENGINE"),
        Some("0"),
        "off by default"
    );
    for (volume, host) in [
        ("host-bin", format!("{prefix}/bin")),
        ("host-etc-ociguard", "/etc/ociguard".into()),
        ("host-etc-containerd", "/etc/containerd".into()),
        ("host-etc-crio", "/etc/crio".into()),
    ] {
        assert_eq!(str_of(volumes[volume], "/hostPath/path"), host, "{volume}");
        assert_eq!(
            mount_path(install, volume),
            Some(format!("{root}{host}").as_str()),
            "{volume}"
        );
    }
    // The sync: the same node root, the ConfigMap where it reads it.
    let sync = container("policy-sync");
    let root = env_of(sync, "OCIGUARD_ROOT").unwrap();
    assert_eq!(
        mount_path(sync, "host-etc-ociguard"),
        Some(format!("{root}/etc/ociguard").as_str())
    );
    let source = env_of(sync, "OCIGUARD_POLICY_SOURCE").unwrap();
    let cm_volume = volumes
        .iter()
        .find(|(_, v)| v.get("configMap").is_some())
        .map(|(name, _)| *name)
        .unwrap();
    assert_eq!(mount_path(sync, cm_volume), Some(source));
    // ociguardd: the node's paths where its config names them.
    let d = container("ociguardd");
    for (volume, path) in [
        ("host-etc-ociguard", "/etc/ociguard"),
        ("host-run", "/run"),
        ("host-var-lib-ociguard", "/var/lib/ociguard"),
        ("host-sys-fs-bpf", "/sys/fs/bpf"),
    ] {
        assert_eq!(str_of(volumes[volume], "/hostPath/path"), path);
        assert_eq!(mount_path(d, volume), Some(path), "{volume}");
    }

    // The example ConfigMap is deploy/policies, key for file, and the set is valid.
    let cms = find("ConfigMap");
    assert_eq!(cms.len(), 1);
    let data: BTreeMap<String, String> = cms[0]["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        data,
        as_map(&shipped_policies()),
        "policies-configmap.yaml differs from deploy/policies"
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in &data {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let out = Command::new(CTL)
        .args(["policy", "check"])
        .arg(dir.path())
        .env("OCIGUARD_CONFIG", dir.path().join("no-config.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
