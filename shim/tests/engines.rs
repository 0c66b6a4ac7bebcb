//! Real engines (Podman, containerd) running through ociguard: policy chosen by image labels
//! that ociguard resolves from the engine's image store. Root only; skips visibly otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::containerd::Containerd;
use common::*;
use serde_json::Value;

const POLICIES: &[(&str, &str)] = &[
    (
        "locked.toml",
        "name = \"locked\"\n[match]\nlabels = { \"org.ociguard.profile\" = \"locked\" }\n[seccomp]\ndeny = [\"mkdir\", \"mkdirat\"]\n",
    ),
    (
        // Only an annotation the engine sets may select this one; labels never.
        "privileged.toml",
        "name = \"privileged\"\nselectable_by_label = false\n[match]\nannotations = { \"org.example.admin-approved\" = \"true\" }\n[seccomp]\ninject_default = false\n",
    ),
];

const PROBE: &str = "grep '^Seccomp:' /proc/self/status; if mkdir /tmp/d 2>/dev/null; then echo MKDIR=ok; else echo MKDIR=fail; fi";

fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// A runtime wrapper for the engine: sets OCIGUARD_CONFIG (engines do not pass our env through
/// conmon or the shim), and on `create` first runs `ociguardctl explain --json` on the untouched
/// bundle and keeps the bundle's config before and after, so the test can compare.
fn wrapper(w: &World) -> PathBuf {
    let ctl = common::monitor::sibling_bin("ociguardctl");
    let path = w.path().join("runtime-wrapper");
    let script = format!(
        r#"#!/bin/sh
export OCIGUARD_CONFIG={config}
bundle=.
prev=
for a in "$@"; do
  case "$prev" in --bundle|-b) bundle=$a;; esac
  case "$a" in --bundle=*) bundle=${{a#--bundle=}};; esac
  prev=$a
done
case " $* " in
  *" create "*)
    {ctl} explain --json "$bundle" > {dir}/explain.json 2>{dir}/explain.err
    cp "$bundle/config.json" {dir}/before.json
    {ociguard} "$@"; rc=$?
    cp "$bundle/config.json" {dir}/after.json
    exit $rc;;
esac
exec {ociguard} "$@"
"#,
        config = w.config().display(),
        ctl = ctl.display(),
        ociguard = *OCIGUARD,
        dir = w.path().display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Poll `f` for up to 10 s.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn world() -> World {
    let w = World::new();
    for (f, t) in POLICIES {
        w.policy(f, t);
    }
    w
}

fn import_podman(tag: &str, labels: &[&str]) -> bool {
    let tar = repo().join("test-bundles/out/image.tar");
    let mut c = Command::new("podman");
    c.arg("import");
    for l in labels {
        c.arg("--change").arg(format!("LABEL {l}"));
    }
    let out = c.arg(&tar).arg(tag).output().unwrap();
    if !out.status.success() {
        eprintln!("podman import: {}", stderr(&out));
    }
    out.status.success()
}

fn podman_run(runtime: &Path, image: &str, extra: &[&str]) -> std::process::Output {
    let (nofile, nproc) = ("1024:1024", "1024:1024");
    Command::new("podman")
        .arg("--runtime")
        .arg(runtime)
        .args(["run", "--rm", "--network", "none", "--ulimit"])
        .arg(format!("nofile={nofile}"))
        .arg("--ulimit")
        .arg(format!("nproc={nproc}"))
        .args(["--tmpfs", "/tmp"])
        .args(extra)
        .arg(image)
        .args(["sh", "-c", PROBE])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn decision_for(w: &World, needle: &str) -> Value {
    let text = std::fs::read_to_string(w.decisions()).unwrap();
    text.lines()
        .rev()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|d| d["bundle"].as_str().is_some_and(|b| b.contains(needle)) || needle.is_empty())
        .unwrap()
}

#[test]
fn podman_image_labels_select_the_policy() {
    if let Some(why) = cannot_run_containers() {
        eprintln!("skip: {why}");
        return;
    }
    if tool("podman").is_none() {
        eprintln!("skip: podman not installed");
        return;
    }
    let w = world();
    let rt = wrapper(&w);
    let allow_all = r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#;
    assert!(import_podman(
        "localhost/ociguard-it-locked:1",
        &[
            "org.ociguard.profile=locked",
            &format!("io.containers.seccomp.profile='{allow_all}'")
        ]
    ));
    assert!(import_podman("localhost/ociguard-it-plain:1", &[]));
    assert!(import_podman(
        "localhost/ociguard-it-wantspriv:1",
        &["org.ociguard.profile=privileged"]
    ));

    // Labelled: the locked policy, visible inside (mkdir denied) — and the image's own
    // allow-everything seccomp label does not loosen it.
    let out = podman_run(&rt, "localhost/ociguard-it-locked:1", &[]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("MKDIR=fail"), "{text}");
    let d = w.last_decision();
    assert_eq!(d["decision"]["policy"], "locked", "{d}");
    assert_eq!(
        d["decision"]["facts"]["labels"]["org.ociguard.profile"],
        "locked"
    );
    assert!(d["decision"]["facts"]["labels_source"]
        .as_str()
        .unwrap()
        .starts_with("containers/storage"));
    assert_eq!(
        d["decision"]["facts"]["image"],
        "localhost/ociguard-it-locked:1"
    );

    // explain on the untouched bundle said exactly what create then wrote.
    let explained: Value =
        serde_json::from_slice(&std::fs::read(w.path().join("explain.json")).unwrap())
            .unwrap_or_else(|e| {
                panic!(
                    "explain: {e}: {}",
                    std::fs::read_to_string(w.path().join("explain.err")).unwrap()
                )
            });
    assert_eq!(explained["decision"]["policy"], "locked");
    assert_eq!(
        explained["decision"]["policy_digest"],
        d["decision"]["policy_digest"]
    );
    let before: Value =
        serde_json::from_slice(&std::fs::read(w.path().join("before.json")).unwrap()).unwrap();
    let mut after: Value =
        serde_json::from_slice(&std::fs::read(w.path().join("after.json")).unwrap()).unwrap();
    assert_ne!(before, after);
    // The one thing create adds after the decision: crun's precompiled copy of the final
    // profile (compiling writes the cache, so explain, which writes nothing, leaves it out).
    let ann = after["annotations"].as_object_mut().unwrap();
    let bpf = ann.remove("run.oci.seccomp_bpf_data");
    let marker = ann.remove("org.ociguard.seccomp.bpf");
    let mut explained_doc = explained["document"].clone();
    match *common::DELEGATE {
        common::Delegate::Crun => assert!(
            bpf.is_some() && marker.is_some(),
            "create should have precompiled the filter"
        ),
        common::Delegate::Builtin => {
            assert!(bpf.is_none() && marker.is_none(), "only crun reads it");
            // The builtin runtime drops `tmpcopyup` from Podman's --tmpfs /tmp (empty in the
            // image, so nothing to copy): the one change the delegate makes.
            for m in explained_doc["mounts"].as_array_mut().unwrap() {
                if let Some(o) = m.get_mut("options").and_then(Value::as_array_mut) {
                    o.retain(|x| x != "tmpcopyup");
                }
            }
        }
    }
    let explained_doc = &explained_doc;
    for key in after.as_object().unwrap().keys() {
        assert_eq!(
            explained_doc[key], after[key],
            "explain and create differ at .{key}"
        );
    }
    assert_eq!(explained_doc, &after);

    // The second container of the image is served from the label cache (the image id is the
    // config digest), with the same outcome.
    let out = podman_run(&rt, "localhost/ociguard-it-locked:1", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("MKDIR=fail"), "{}", stdout(&out));
    let d = w.last_decision();
    assert_eq!(d["decision"]["policy"], "locked", "{d}");
    let src = d["decision"]["facts"]["labels_source"].as_str().unwrap();
    assert!(src.ends_with("(cached)"), "{src}");

    // Unlabelled: the default policy (built-in: filtered, mkdir allowed).
    let out = podman_run(&rt, "localhost/ociguard-it-plain:1", &[]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("MKDIR=ok") && text.contains("Seccomp:\t2"),
        "{text}"
    );
    assert_eq!(w.last_decision()["decision"]["policy"], "default");

    // A label naming a policy that is not selectable by label changes nothing.
    let out = podman_run(&rt, "localhost/ociguard-it-wantspriv:1", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Seccomp:\t2"), "{}", stdout(&out));
    assert_eq!(w.last_decision()["decision"]["policy"], "default");

    for tag in ["locked", "plain", "wantspriv"] {
        let _ = Command::new("podman")
            .args(["rmi", "-f", &format!("localhost/ociguard-it-{tag}:1")])
            .output();
    }
}

/// A private containerd for the test, stopped (by its pid) when dropped.
#[test]
fn containerd_image_labels_select_the_same_policy() {
    if let Some(why) = cannot_run_containers() {
        eprintln!("skip: {why}");
        return;
    }
    if tool("podman").is_none() || tool("ctr").is_none() {
        eprintln!("skip: podman (to build the OCI archive) or ctr not installed");
        return;
    }
    let Some(ctd) = Containerd::start("ociguard-it").ok() else {
        eprintln!("skip: could not start a private containerd");
        return;
    };
    let w = world();
    w.write_config(&format!(
        "monitor_socket = \"{}\"\n[labels]\ncontainerd_socket = \"{}\"\n",
        w.path().join("run/monitor.sock").display(),
        ctd.sock.display()
    ));
    let rt = wrapper(&w);
    assert!(import_podman(
        "localhost/ociguard-it-ctd:1",
        &["org.ociguard.profile=locked"]
    ));
    let archive = w.path().join("img.tar");
    let out = Command::new("podman")
        .args(["save", "--format", "oci-archive", "-o"])
        .arg(&archive)
        .arg("localhost/ociguard-it-ctd:1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ctd
        .ctr(&[
            "image",
            "import",
            "--base-name",
            "localhost/ociguard-it-ctd",
            archive.to_str().unwrap(),
        ])
        .unwrap();
    assert!(out.status.success(), "ctr import: {}", stderr(&out));
    let images = stdout(&ctd.ctr(&["image", "ls", "-q"]).unwrap());
    let image = images
        .lines()
        .find(|l| l.contains("ociguard-it-ctd"))
        .expect("imported image")
        .to_owned();

    // The third container asks a private ociguardd that follows this containerd.
    let mut _monitor = None; // kept alive until the end of the test
    for (i, expect) in [(1, "fresh lookup"), (2, "cached"), (3, "via ociguardd")] {
        if i == 3 {
            let b = common::monitor::bins();
            let args = ["--containerd-socket", ctd.sock.to_str().unwrap()];
            _monitor = Some(common::monitor::Monitor::started(&w, &b, &args));
        }
        let id = format!("ctd-it-{i}");
        let out = ctd
            .ctr(&[
                "run",
                "--rm",
                "--runc-binary",
                rt.to_str().unwrap(),
                &image,
                &id,
                "sh",
                "-c",
                PROBE,
            ])
            .unwrap();
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "ctr run ({expect}): {}{}",
            text,
            stderr(&out)
        );
        assert!(text.contains("MKDIR=fail"), "{expect}: {text}");
        let d = decision_for(&w, &id);
        assert_eq!(d["decision"]["policy"], "locked", "{d}");
        let src = d["decision"]["facts"]["labels_source"].as_str().unwrap();
        assert!(src.starts_with("containerd ociguard-it"), "{src}");
        if i == 2 {
            assert!(
                src.ends_with("(cached)") && !src.contains("ociguardd"),
                "second container of the image must hit the cache: {src}"
            );
        }
        if i == 3 {
            assert!(
                src.contains("via ociguardd") && src.ends_with("cached)"),
                "with ociguardd following containerd, it answers: {src}"
            );
        }
    }
    if _monitor.is_some() {
        // A container created while the monitor follows is published as a file; ociguard's
        // lookup reads it without a round trip, and the delete unpublishes it.
        let published = w
            .path()
            .join("run/containerd-images/ociguard-it/ctd-it-pub");
        let out = ctd
            .ctr(&["container", "create", &image, "ctd-it-pub"])
            .unwrap();
        assert!(
            out.status.success(),
            "ctr container create: {}",
            stderr(&out)
        );
        wait_until("the container's image to be published", || {
            published.exists()
        });
        let bundle = ctd
            .state()
            .join("io.containerd.runtime.v2.task/ociguard-it/ctd-it-pub");
        let sources = ociguard_policy::config::LabelSources {
            containerd_socket: ctd.sock.clone(),
            ..Default::default()
        };
        let info = ociguard_shim::labels::resolve(
            &bundle,
            &ociguard_policy::select::Facts::default(),
            &sources,
            &w.path().join("state/labels"),
            Some(&w.path().join("run/monitor.sock")),
        )
        .unwrap()
        .unwrap();
        assert!(
            info.source.contains("(published, cached)")
                && info.labels.get("org.ociguard.profile").map(String::as_str) == Some("locked"),
            "{info:?}"
        );
        let out = ctd.ctr(&["container", "rm", "ctd-it-pub"]).unwrap();
        assert!(out.status.success(), "ctr container rm: {}", stderr(&out));
        wait_until("the delete to unpublish it", || !published.exists());
    }
    let _ = Command::new("podman")
        .args(["rmi", "-f", "localhost/ociguard-it-ctd:1"])
        .output();
}

#[test]
fn containerd_down_leaves_labels_unresolved_and_required_fails_closed() {
    // No containers needed: a bundle in containerd's layout, containerd absent.
    let w = World::new();
    let fake = w.path().join("fake-runtime");
    std::fs::write(&fake, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    w.write_config(&format!(
        "runtime = \"{}\"\n[labels]\ncontainerd_socket = \"{}\"\n",
        fake.display(),
        w.path().join("no.sock").display()
    ));
    let task = w.path().join("io.containerd.runtime.v2.task/default");
    std::fs::create_dir_all(&task).unwrap();
    let bundle = task.join("c1");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&spec("true")).unwrap(),
    )
    .unwrap();
    let before = std::fs::read(bundle.join("config.json")).unwrap();

    let out = w.ociguard(&["create", "--bundle", bundle.to_str().unwrap(), "c1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = w.last_decision();
    assert!(
        d["decision"]["facts"]["labels_unresolved"]
            .as_str()
            .unwrap()
            .contains("no.sock absent"),
        "{d}"
    );

    std::fs::write(bundle.join("config.json"), &before).unwrap();
    w.policy(
        "default.toml",
        "name = \"default\"\nlabels = \"required\"\n",
    );
    let out = w.ociguard(&["create", "--bundle", bundle.to_str().unwrap(), "c1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("requires image labels"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(bundle.join("config.json")).unwrap(), before);
}

/// An OCI archive of one image whose config blob is `config` (bytes, possibly not even valid
/// UTF-8), with an empty layer, named `name` for `ctr image import`.
fn oci_archive(dir: &Path, name: &str, config: &[u8]) -> PathBuf {
    use ociguard_policy::digest::sha256;
    let root = dir.join(format!("oci-{}", &sha256(name.as_bytes())[7..19]));
    let blobs = root.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = sha256(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        (d, bytes.len())
    };
    let layer = vec![0u8; 10240]; // an empty tar archive: two zero blocks and padding
    let (layer_d, layer_n) = put(&layer);
    let (cfg_d, cfg_n) = put(config);
    let manifest = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d, "size": cfg_n},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d, "size": layer_n}]});
    let (man_d, man_n) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man_d, "size": man_n,
        "annotations": {"io.containerd.image.name": name}}]});
    std::fs::write(root.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let archive = root.with_extension("tar");
    let out = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", stderr(&out));
    archive
}

#[test]
fn containerd_huge_and_binary_labels_are_unresolved_never_cached() {
    if let Some(why) = cannot_run_containers() {
        eprintln!("skip: {why}");
        return;
    }
    if tool("ctr").is_none() {
        eprintln!("skip: ctr not installed");
        return;
    }
    let Some(ctd) = Containerd::start("ociguard-it").ok() else {
        eprintln!("skip: could not start a private containerd");
        return;
    };
    let w = World::new();
    let config = |labels: &str| {
        format!(r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{labels}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#)
            .into_bytes()
    };
    let mut invalid_utf8 = config(r#"{"k":"XX"}"#);
    let at = invalid_utf8.windows(2).position(|p| p == b"XX").unwrap();
    invalid_utf8[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
    let many: Vec<String> = (0..5000).map(|i| format!(r#""l{i}":"v""#)).collect();
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("good", config(r#"{"tier":"web"}"#), None),
        (
            "huge",
            config(&format!(r#"{{"big":"{}"}}"#, "A".repeat(5 << 20))),
            Some("is 5242880 bytes (limit 65536)"),
        ),
        (
            "nul",
            config(r#"{"k":"a\u0000b"}"#),
            Some("control character"),
        ),
        (
            "esc",
            config(r#"{"k\u001b[2J":"v"}"#),
            Some("control character"),
        ),
        ("utf8", invalid_utf8, Some("parse ")),
        (
            "many",
            config(&format!("{{{}}}", many.join(","))),
            Some("5000 labels (limit 1024)"),
        ),
    ];
    let sources = ociguard_policy::config::LabelSources {
        containerd_socket: ctd.sock.clone(),
        timeout_ms: 5000,
        ..Default::default()
    };
    let cache = w.path().join("cache");
    let bundle = w
        .path()
        .join("io.containerd.runtime.v2.task/ociguard-it/c1");
    for (tag, cfg, expect) in &cases {
        let name = format!("localhost/ociguard-it-labels-{tag}:1");
        let archive = oci_archive(w.path(), &name, cfg);
        let out = ctd
            .ctr(&["image", "import", "--no-unpack", archive.to_str().unwrap()])
            .unwrap();
        assert!(out.status.success(), "ctr import {tag}: {}", stderr(&out));
        // The CRI path: the image name is already known from an annotation.
        let facts = ociguard_policy::select::Facts {
            image: Some(name.clone()),
            ..Default::default()
        };
        let t = std::time::Instant::now();
        let got = ociguard_shim::labels::resolve(&bundle, &facts, &sources, &cache, None);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{tag}: {:?}",
            t.elapsed()
        );
        match expect {
            None => {
                let info = got.unwrap().unwrap();
                assert_eq!(info.labels["tier"], "web");
            }
            Some(expect) => {
                let e = got.unwrap_err().to_string();
                assert!(e.contains(expect), "{tag}: {e:.300}");
                assert!(e.len() < 600, "{tag}: reason of {} bytes", e.len());
            }
        }
        let _ = ctd.ctr(&["image", "rm", &name]).unwrap();
    }
    // Only the good image was cached.
    let entries = std::fs::read_dir(cache.join("containerd")).unwrap().count();
    assert_eq!(entries, 1);
}
