//! Behaviour profiles end to end: a busybox workload run under a `learn` policy (real crun
//! containers through ociguard, in a network namespace with two 198.18 test hosts), the profile
//! ociguardd records surviving a SIGKILL, `ociguardctl policy generate`, the same workload
//! running clean under the generated policy, and the hidden bad behaviour (a shell, a program
//! it never ran, a new host, a secret read by another program) blocked or reported as an
//! anomaly of the workload's identity.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::monitor::{bins, ctl, events_where, monitored_world, Bins, Monitor};
use common::netns::Net;
use common::overlay::{Overlay, READER};
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.profile-token";
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const IMAGE: &str =
    "localhost/app@sha256:5d2a1c5e0f6b8d7a3c4e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c";
const DIGEST: &str = "sha256:5d2a1c5e0f6b8d7a3c4e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c";

/// An HTTP server on a test host, answering `body` (killed on drop).
struct Server(Child);

impl Server {
    fn start(w: &World, netns: &str, body: &str) -> Server {
        let root = w.path().join(format!("www-{netns}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), body).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(rootfs().join("bin/busybox"))
            .args(["httpd", "-f", "-p", "8080", "-h"])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The workload: `find` running each `-exec` in turn (no shell is involved), in the namespace of `net`,
/// from the image IMAGE, with a service-account token mounted.
fn workload(w: &World, ovl: &Overlay, net: &Net, execs: &[&[&str]]) -> Value {
    let mut args: Vec<String> = vec![
        "/bin/find".into(),
        "/".into(),
        "-maxdepth".into(),
        "0".into(),
    ];
    // `( -exec ... ; -o -prune )`: a failed (or refused) one does not stop the next.
    for e in execs {
        args.extend(["(".into(), "-exec".into()]);
        args.extend(e.iter().map(|s| (*s).to_owned()));
        args.extend([";".into(), "-o".into(), "-prune".into(), ")".into()]);
    }
    let mut s = spec("true");
    s["process"]["args"] = json!(args);
    s["root"] = json!({"path": ovl.merged, "readonly": false});
    s["annotations"]["org.example.app"] = json!("on");
    s["annotations"]["io.kubernetes.cri.image-name"] = json!(IMAGE);
    w.mount_secret(&mut s, SA_DIR, "token", TOKEN);
    s["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "network", "path": net.path()}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
    s
}

const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// What the workload does every time: read its token (with its own reader), call its API,
/// list a directory.
fn normal() -> Vec<&'static [&'static str]> {
    vec![
        &[READER, "cat", TOKEN_PATH],
        &["/bin/wget", "-q", "-O", "-", "http://198.18.1.1:8080/"],
        &["/bin/ls", "/etc"],
    ]
}

fn run(w: &World, id: &str, spec: &Value) -> (i32, String) {
    w.run_to_end(id, spec)
}

/// Events of container `id` whose kind is in `kinds`, waiting up to 5 s for at least `want`.
fn events(w: &World, b: &Bins, id: &str, kinds: &[&str], want: usize) -> Vec<Value> {
    events_where(w, b, id, |kind| kinds.contains(&kind), want)
}

/// `ociguardctl profile show localhost/app --json`, once it has what `done` wants (15 s).
fn profile_when(w: &World, b: &Bins, m: &Monitor, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = Value::Null;
    loop {
        let out = ctl(w, b, &["profile", "show", "localhost/app", "--json"]);
        if let Some(p) = serde_json::from_str::<Value>(&stdout(&out))
            .ok()
            .and_then(|v| v.as_array().and_then(|a| a.first().cloned()))
        {
            if done(&p) {
                return p;
            }
            last = p;
        }
        assert!(
            Instant::now() < deadline,
            "the profile is not there: {last:#}\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn complete(p: &Value) -> bool {
    p["execs"].get("/bin/wget").is_some()
        && p["execs"].get("/bin/ls").is_some()
        && p["secrets"].get(TOKEN_PATH).is_some()
        && !p["egress"].as_array().unwrap().is_empty()
}

#[test]
fn a_learned_profile_becomes_a_policy_the_workload_runs_clean_under_and_deviations_are_caught() {
    if let Some(why) = cannot_run_containers() {
        eprintln!("skip: {why}");
        return;
    }
    let b = bins();
    let net = Net::new("prf", 2);
    let w = monitored_world(&b, "");
    let _api = Server::start(&w, &net.hosts[0].netns, "HELLO-API");
    let _other = Server::start(&w, &net.hosts[1].netns, "HELLO-OTHER");
    w.policy(
        "learn.toml",
        "name = \"learn-app\"\nmode = \"learn\"\n[match]\nannotations = { \"org.example.app\" = \"on\" }\n",
    );
    let mut m = Monitor::started(&w, &b, &[]);
    let ovl = Overlay::new(&w, "prf");

    // Learn: three containers of the workload.
    for i in 1..=3 {
        let id = format!("prf-learn-{i}");
        let (code, out) = run(&w, &id, &workload(&w, &ovl, &net, &normal()));
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("HELLO-API") && out.contains(TOKEN), "{out}");
    }
    let p = profile_when(&w, &b, &m, |p| complete(p) && p["containers"] == 3);
    assert_eq!(p["subject"]["digest"], DIGEST);
    assert_eq!(p["subject"]["identity"], "image:localhost/app");
    assert_eq!(p["secrets"][TOKEN_PATH], json!([READER]));
    assert_eq!(
        p["egress"],
        json!([{"net": "198.18.1.1/32", "protocol": 6, "port": 8080}])
    );
    assert_eq!(p["execs"]["/bin/find"]["containers"], 3, "{p:#}");
    for prog in ["/bin/cat", "/bin/wget", "/bin/ls"] {
        assert!(p["execs"].get(prog).is_some(), "{prog} in {p:#}");
    }
    assert!(p["execs"].get("/bin/sh").is_none(), "{p:#}");

    // The profile is on disk: it survives a SIGKILL of ociguardd.
    let file = m.wait_for("the profile file", || {
        let dir = w.path().join("monitor-state/profiles");
        // The profile itself, not the temporary file of a write in progress (a SIGKILL
        // before its rename leaves the previous version, here none).
        std::fs::read_dir(&dir).ok()?.flatten().find_map(|e| {
            if e.path().extension().and_then(|x| x.to_str()) != Some("json") {
                return None;
            }
            let text = std::fs::read_to_string(e.path()).ok()?;
            (text.contains("/bin/wget")
                && text.contains("198.18.1.1/32")
                && text.contains(TOKEN_PATH))
            .then(|| e.path())
        })
    });
    m.kill9();
    m.start();
    let again = profile_when(&w, &b, &m, complete);
    assert_eq!(again["execs"], p["execs"]);
    assert_eq!(again["egress"], p["egress"]);

    // Generate, check, and put it in place of the learning policy.
    let out = ctl(
        &w,
        &b,
        &[
            "policy",
            "generate",
            "--from",
            "localhost/app",
            "--name",
            "app",
            "-o",
            w.policies().join("app.toml").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_file(w.policies().join("learn.toml")).unwrap();
    let text = std::fs::read_to_string(w.policies().join("app.toml")).unwrap();
    assert!(text.contains("learned from 3 container(s)"), "{text}");
    assert!(text.contains("deny_shells = true"), "{text}");
    let out = ctl(&w, &b, &["policy", "check"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    // The workload runs clean under it: nothing refused, nothing anomalous.
    let (code, out) = run(&w, "prf-clean", &workload(&w, &ovl, &net, &normal()));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("HELLO-API") && out.contains(TOKEN), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    let bad = events(
        &w,
        &b,
        "prf-clean",
        &[
            "anomaly",
            "behavior-denied",
            "behavior-audit",
            "egress-denied",
        ],
        0,
    );
    assert!(bad.is_empty(), "{bad:#?}\n{text}");

    // The hidden behaviour: a shell, a program it never ran, a new host, and its token read by
    // a program that never read it.
    let sneaky: Vec<&[&str]> = vec![
        &["/bin/sh", "-c", "echo SHELL-RAN"],
        &["/bin/id"],
        &["/bin/wget", "-q", "-O", "-", "http://198.18.2.1:8080/"],
        &["/bin/cat", TOKEN_PATH],
    ];
    let (code, out) = run(&w, "prf-bad", &workload(&w, &ovl, &net, &sneaky));
    let out = format!("exit {code}: {out}");
    assert!(!out.contains("SHELL-RAN"), "{out}");
    assert!(!out.contains("HELLO-OTHER"), "{out}");
    assert!(!out.contains(TOKEN), "{out}");
    assert!(!out.contains("uid="), "{out}");
    let denied = events(&w, &b, "prf-bad", &["behavior-denied"], 3);
    let rules: Vec<&str> = denied
        .iter()
        .map(|e| e["detail"]["rule"].as_str().unwrap())
        .collect();
    // The shell is refused as a shell, or (when its path could not be read from the blocked
    // execve) as a program outside allowed_exec: refused either way.
    let refused_sh = denied.iter().any(|e| {
        e["detail"]["argv"][0] == "/bin/sh"
            && matches!(
                e["detail"]["rule"].as_str(),
                Some("shell" | "exec-not-allowed")
            )
    });
    assert!(refused_sh, "{denied:#?}");
    for r in ["exec-not-allowed", "secret"] {
        assert!(rules.contains(&r), "{r} not in {denied:#?}");
    }
    let anomalies = events(&w, &b, "prf-bad", &["anomaly"], 2);
    let egress = anomalies
        .iter()
        .find(|e| e["detail"]["kind"] == "egress")
        .unwrap_or_else(|| {
            let all = events(&w, &b, "prf-bad", &["anomaly", "egress-denied"], 99);
            panic!("no egress anomaly: {all:#?}\n{out}\n{}", m.log())
        });
    let d = &egress["detail"];
    assert_eq!(d["destination"], "tcp 198.18.2.1:8080");
    assert_eq!(d["identity"], "image:localhost/app");
    assert_eq!(d["image_digest"], DIGEST);
    assert_eq!(d["policy"], "app");
    assert!(d["profile"].as_str().unwrap().len() == 16);
    assert!(!events(&w, &b, "prf-bad", &["egress-denied"], 1).is_empty());

    // A policy that only compares: what is outside the profile is reported, once per
    // container and program, and the process goes on (report, not kill).
    std::fs::remove_file(w.policies().join("app.toml")).unwrap();
    w.policy(
        "watch.toml",
        "name = \"watch\"\n[match]\nannotations = { \"org.example.app\" = \"on\" }\n[profile]\non_anomaly = \"report\"\n",
    );
    let execs: Vec<&[&str]> = vec![&["/bin/id"], &["/bin/id"], &["/bin/ls", "/etc"]];
    let (code, out) = run(&w, "prf-watch", &workload(&w, &ovl, &net, &execs));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("uid="), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    let anomalies = events(&w, &b, "prf-watch", &["anomaly"], 1);
    let programs: Vec<&str> = anomalies
        .iter()
        .filter_map(|e| e["detail"]["program"].as_str())
        .collect();
    assert_eq!(programs, ["/bin/id"], "{anomalies:#?}");
    assert_eq!(anomalies[0]["detail"]["action"], "report");

    // Another image of the same name: no profile, said once for the container.
    let mut other = workload(&w, &ovl, &net, &execs);
    other["annotations"]["io.kubernetes.cri.image-name"] = json!("localhost/app@sha256:0000");
    let (code, out) = run(&w, "prf-new-image", &other);
    assert_eq!(code, 0, "{out}");
    let said = events(&w, &b, "prf-new-image", &["anomaly"], 1);
    std::thread::sleep(Duration::from_millis(300));
    let said_all = events(&w, &b, "prf-new-image", &["anomaly"], 1);
    assert_eq!(said_all.len(), 1, "{said_all:#?}");
    assert_eq!(said[0]["detail"]["kind"], "no-profile");

    // explain names the profile and its age.
    let bundle = w.bundle("prf-explain", &workload(&w, &ovl, &net, &normal()));
    let out = ctl(&w, &b, &["explain", bundle.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(
        text.contains("behaviour profile: is compared with")
            && text.contains("3 container(s), age"),
        "{text}{}",
        stderr(&out)
    );

    // A profile file damaged on disk is set aside at start, said, and not used.
    m.kill9();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    m.start();
    let out = ctl(&w, &b, &["profile", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("set aside"), "{}", stderr(&out));
    assert!(file.with_extension("json.corrupt").exists());
}
