#!/usr/bin/env bash
# `make demo`: run one real container through ociguard (delegating to crun) under a policy
# that denies mkdir, and the same bundle under crun alone, and show the difference.
set -euo pipefail
export LC_ALL=C

ociguard=$(realpath "${1:?usage: demo.sh PATH-TO-ociguard}")
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rootfs=$repo/test-bundles/out/rootfs
[[ -x $rootfs/bin/busybox ]] || { echo "demo: $rootfs missing (run test-bundles/build.sh)" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "demo: must run as root (crun creates namespaces and cgroups)" >&2; exit 1; }
crun=$(command -v crun) || { echo "demo: crun not installed (scripts/host-setup.sh demo)" >&2; exit 1; }

work=$(mktemp -d /run/ociguard-demo.XXXXXX)
trap 'crun --root "$work/state" delete -f demo-ociguard >/dev/null 2>&1 || true; crun --root "$work/state" delete -f demo-crun >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
mkdir -p "$work/policies" "$work/state"

cat >"$work/config.toml" <<TOML
runtime = "$crun"
policy_dir = "$work/policies"
decision_log = "$work/decisions.jsonl"
state_dir = "$work/ociguard-state"
TOML

cat >"$work/policies/no-mkdir.toml" <<'TOML'
# Containers annotated org.example.profile=locked may not create directories.
name = "no-mkdir"
mode = "enforce"
[match]
annotations = { "org.example.profile" = "locked" }
[seccomp]
deny = ["mkdir", "mkdirat"]
[process]
drop_capabilities = ["CAP_NET_RAW"]
no_new_privileges = true
[identity]
mode = "off"        # the demo runs no ociguardd (see docs/monitor.md: Identity per policy)
TOML

make_bundle() { # dir
  mkdir -p "$1"
  cat >"$1/config.json" <<JSON
{"ociVersion":"1.0.2","process":{"terminal":false,"user":{"uid":0,"gid":0},
"args":["/bin/sh","-c","grep -E '^(Seccomp|NoNewPrivs|CapBnd):' /proc/self/status; if mkdir /tmp/newdir; then echo 'mkdir: allowed'; else echo 'mkdir: denied'; fi"],
"env":["PATH=/bin"],"cwd":"/",
"capabilities":{"bounding":["CAP_CHOWN","CAP_NET_RAW","CAP_KILL"],"effective":["CAP_CHOWN","CAP_NET_RAW","CAP_KILL"],"permitted":["CAP_CHOWN","CAP_NET_RAW","CAP_KILL"]},
"rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":1024}]},
"root":{"path":"$rootfs","readonly":true},"hostname":"demo",
"mounts":[{"destination":"/proc","type":"proc","source":"proc"},
{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]},
{"destination":"/tmp","type":"tmpfs","source":"tmpfs","options":["nosuid","nodev","mode=1777"]}],
"annotations":{"org.example.profile":"locked"},
"linux":{"namespaces":[{"type":"pid"},{"type":"network"},{"type":"ipc"},{"type":"uts"},{"type":"mount"}],
"maskedPaths":["/proc/kcore","/proc/keys"],"readonlyPaths":["/proc/sys"]}}
JSON
}

make_bundle "$work/bundle-crun"
make_bundle "$work/bundle-ociguard"

echo "== crun alone (no policy):"
(cd "$work/bundle-crun" && "$crun" --root "$work/state" run demo-crun)
echo
echo "== through ociguard, policy 'no-mkdir' selected by annotation org.example.profile=locked:"
(cd "$work/bundle-ociguard" && OCIGUARD_CONFIG="$work/config.toml" "$ociguard" --root "$work/state" run demo-ociguard)
echo
echo "== decision record (from $work/decisions.jsonl):"
if command -v jq >/dev/null; then
  jq -c '{result, policy: .decision.policy, digest: .decision.policy_digest, reason: .decision.reason, changes: [.decision.changes[] | .kind]}' "$work/decisions.jsonl"
else
  cat "$work/decisions.jsonl"
fi
