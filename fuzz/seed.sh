#!/usr/bin/env bash
# Build the fuzzers' seed corpora under fuzz/seeds/<target>/ (git-ignored) from the repository's
# own files, at run time: test-bundles' captured engine configs (test-bundles/out/, made by
# test-bundles/build.sh; used when present), the shipped policies (deploy/policies/), the JSON
# and TOML the unit tests feed the parsers, the protocol's own examples, and every kept input
# under fuzz/regressions/. Nothing here is committed; rerunning replaces the seeds.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
seeds=$here/seeds
rm -rf "$seeds"
targets=(config_json policy_toml hook_state monitor_protocol crio_labels nflog profile_decode)
for t in "${targets[@]}"; do mkdir -p "$seeds/$t"; done

if ! ls "$repo"/test-bundles/out/*/config.json >/dev/null 2>&1; then
    echo "seed.sh: skip: no captured configs in test-bundles/out (run 'make fixtures' as root)" >&2
fi

python3 - "$repo" "$seeds" <<'PY'
import glob, hashlib, json, os, re, struct, sys

repo, seeds = sys.argv[1], sys.argv[2]

def put(target, data, name=None):
    if isinstance(data, str):
        data = data.encode()
    name = name or hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(seeds, target, name), "wb") as f:
        f.write(data)

def sources(*patterns):
    for pat in patterns:
        for path in sorted(glob.glob(os.path.join(repo, pat), recursive=True)):
            with open(path, encoding="utf-8", errors="replace") as f:
                yield f.read()

def unescape(rust):
    return rust.encode().decode("unicode_escape")

# config.json: captured engine configs, and the configs in the unit tests.
configs = []
for path in sorted(glob.glob(os.path.join(repo, "test-bundles/out/**/*config.json"), recursive=True)):
    with open(path, "rb") as f:
        configs.append(f.read())
for src in sources("policy/src/**/*.rs", "policy/tests/*.rs", "shim/src/**/*.rs", "shim/tests/*.rs"):
    for m in re.finditer(r'br?#"(\{"ociVersion".*?\})"#', src, re.S):
        configs.append(m.group(1).encode())
for c in configs:
    put("config_json", c)

# Policies: the shipped ones and those in the tests.
for path in sorted(glob.glob(os.path.join(repo, "deploy/policies/*.toml"))):
    with open(path, "rb") as f:
        put("policy_toml", f.read())
for src in sources("policy/src/**/*.rs", "policy/tests/*.rs", "shim/tests/*.rs", "ctl/src/**/*.rs"):
    for m in re.finditer(r'"(name = \\"(?:[^"\\]|\\.)*)"', src):
        try:
            put("policy_toml", unescape(m.group(1)))
        except UnicodeDecodeError:
            pass
    for m in re.finditer(r'r#"(\s*name = ".*?)"#', src, re.S):
        put("policy_toml", m.group(1))

# Hook state and CRI-O metadata: from each config's annotations.
for i, c in enumerate(configs):
    try:
        doc = json.loads(c)
    except ValueError:
        continue
    ann = doc.get("annotations") or {}
    for status, pid in (("created", 4242), ("running", 4242), ("stopped", 0)):
        put("hook_state", json.dumps({"ociVersion": "1.0.2", "id": "c%d" % i, "pid": pid,
             "status": status, "bundle": "/run/containers/c%d" % i, "annotations": ann}))
    for key in ("io.kubernetes.cri-o.Labels", "io.kubernetes.cri-o.Annotations"):
        if isinstance(ann.get(key), str):
            put("crio_labels", ann[key])
put("crio_labels", json.dumps({"io.kubernetes.pod.namespace": "default",
    "io.kubernetes.pod.name": "web-0", "io.kubernetes.container.name": "web", "app": "web"}))

# The monitor protocol: the examples in its documentation, and one of each request.
lines = []
for src in sources("monitor/src/protocol.rs"):
    lines += [m.group(1) for m in re.finditer(r'^//! → (\{.*\})$', src, re.M) if "..." not in m.group(1)]
identity = {"id": "web-1", "bundle": "/run/containers/web-1", "pid": 4242, "start_time": 12345,
            "boot_id": "b0", "engine": "podman", "image": {"name": "docker.io/library/nginx:1"},
            "created": "2024-01-02T03:04:05.678Z"}
lines += [json.dumps(r) for r in (
    {"op": "ping"}, {"op": "list"}, {"op": "whoami"}, {"op": "whois", "pid": 1},
    {"op": "inspect", "id": "web-1"}, {"op": "deregister", "id": "web-1", "bundle": "/b"},
    {"op": "events", "follow": True}, {"op": "profiles", "select": "image:nginx"},
    {"op": "image_of", "namespace": "k8s.io", "id": "c1"},
    {"op": "register", "event": "created", "identity": identity},
    {"ok": True, "pid": 4242, "status": "running"})]
for i, line in enumerate(lines):
    put("monitor_protocol", bytes([i % 64]) + line.encode() + b"\n")
put("monitor_protocol", b"\x07" + "\n".join(lines).encode() + b"\n")

# NFLOG datagrams (nlmsghdr, nfgenmsg, attributes), as the kernel sends them.
def nla(kind, value):
    v = struct.pack("=HH", 4 + len(value), kind) + value
    return v + b"\0" * (-len(v) % 4)
def nflog(family, prefix, payload, uid=None):
    body = bytes([family, 0]) + struct.pack(">H", 100)
    body += nla(1, struct.pack(">HBB", 0x86dd if family == 10 else 0x0800, 3, 0))
    body += nla(10, prefix + b"\0")
    if uid is not None:
        body += nla(11, struct.pack(">I", uid))
    body += nla(9, payload)
    return struct.pack("=IHHII", 16 + len(body), 4 << 8, 0, 0, 0) + body
def ipv4(proto, l4, frag=0):
    return bytes([0x45, 0, 0, 60, 0x12, 0x34]) + struct.pack(">H", frag) + bytes([64, proto, 0, 0,
        198, 18, 1, 2, 198, 18, 1, 3]) + l4
def ipv6(nxt, rest):
    return bytes([0x60, 0, 0, 0]) + struct.pack(">H", len(rest)) + bytes([nxt, 64]) + \
        bytes(15) + b"\2" + bytes([0x20, 1, 0xd, 0xb8]) + bytes(11) + b"\1" + rest
tcp = struct.pack(">HH", 40000, 4444) + bytes(16)
udp = struct.pack(">HHHH", 40000, 53, 8, 0)
packets = [nflog(2, b"ociguard-deny ", ipv4(6, tcp), 0),
           nflog(2, b"ociguard-new ", ipv4(17, udp)),
           nflog(2, b"ociguard-deny ", ipv4(1, b"\x08\x00\0\0"), 1000),
           nflog(2, b"ociguard-deny ", ipv4(6, b"", frag=0x20)),
           nflog(2, b"someone-else ", ipv4(6, tcp)),
           nflog(10, b"ociguard-deny ", ipv6(6, tcp), 0),
           nflog(10, b"ociguard-deny ", ipv6(0, bytes([44, 0]) + bytes(6) + bytes([17, 0, 0, 0, 0, 0, 0, 1]) + udp)),
           nflog(10, b"ociguard-new ", ipv6(58, b"\x80\x00\0\0"))]
error = struct.pack("=IHHII", 36, 2, 0x200, 1, 0) + struct.pack("=i", -1) + struct.pack("=IHHII", 20, 0xa00, 5, 7, 0)
for i, p in enumerate(packets):
    put("nflog", p)
put("nflog", b"".join(packets) + error)
put("nflog", error)

# Profiles: the body of one (the target wraps an even-first-byte input with its checksum).
body = json.dumps({"subject": {"image": "docker.io/library/nginx:1", "identity": "image:docker.io/library/nginx:1"},
                   "first_seen": 1, "last_seen": 2, "containers": 1, "policies": ["learn"],
                   "execs": {"/bin/sh": {"resolved": ["/bin/busybox"], "containers": 1}},
                   "secrets": {"/run/secrets/token": ["/bin/sh"]},
                   "egress": [{"net": "198.18.1.0/24", "protocol": 6, "port": 443}],
                   "destinations_seen": 3}, separators=(",", ":"))
put("profile_decode", b"\0" + body.encode())
doc = '{"format":1,"sha256":"sha256:%s","profile":%s}\n' % (hashlib.sha256(body.encode()).hexdigest(), body)
put("profile_decode", b"\1" + doc.encode())
PY

for t in "${targets[@]}"; do
    if [[ -d $here/regressions/$t ]]; then
        cp "$here/regressions/$t"/* "$seeds/$t/" 2>/dev/null || true
    fi
    printf 'seed.sh: %-17s %3d seeds\n' "$t" "$(find "$seeds/$t" -type f | wc -l)" >&2
done
