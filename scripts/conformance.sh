#!/usr/bin/env bash
# Run the OCI runtime-tools validation suite (github.com/opencontainers/runtime-tools) against
# an OCI runtime and summarise it. Not part of `make test`: `make conformance` runs it.
#
#   scripts/conformance.sh [--runtime PATH] [--name LABEL] [--out DIR]
#   scripts/conformance.sh --ociguard PATH [--delegate RUNTIME] [--policy-dir DIR] [--name LABEL] [--out DIR]
#
# Options:
#   --runtime PATH     the runtime the suite calls (default /usr/bin/crun)
#   --ociguard PATH    run ociguard instead, through a generated wrapper that points it at a
#                      private test config ($OCIGUARD_CONFIG); the config's `runtime` is
#                      --delegate (default /usr/bin/crun; `builtin` for the in-process one)
#   --policy-dir DIR   ociguard's policy_dir (default: an empty directory, so the built-in
#                      default policy applies)
#   --name LABEL       label of the summary line (default: from `RUNTIME --version`)
#   --out DIR          per-test TAP, stderr and failures (default target/conformance/<label>/)
#   --timeout SECS     per test file (default 120); a test still running then is killed and
#                      counted as one failure named "timeout"
#   --tests LIST       space-separated test names (default: all of validation/*/)
#   --keep             keep the run's temporary directory (bundles left behind, the ociguard
#                      config, state, spool and decision log) and print its path
#   --src DIR          runtime-tools source: a checkout or a bare git dir ($RUNTIME_TOOLS_SRC;
#                      default: the mirror at /work/.mirror/opencontainers+runtime-tools/repo)
#
# Environment: RUNTIME_TOOLS_SRC (as --src), RUNTIME_TOOLS_BUILD (build dir, default
# /tmp/rt-build/runtime-tools; rebuilt only when the source, the Go version or this script's
# build recipe changed), GO (default: /usr/lib/go-1.22/bin/go, installed from
# bookworm-backports when missing).
#
# Prints one line per run on stdout, e.g.
#   crun 1.8.1: 213 ok, 5 not ok, 3 skip (of 221) in 41 test files
# Progress goes to stderr. Exit: 0 when the suite ran (whatever its results), 1 on an error,
# 2 when the runtime-tools source is not available (CI machines have no copy of it).
#
# Nothing of runtime-tools is kept in this repository: the suite is built from the source
# directory into the build dir. Needs root (the suite creates real containers).
set -euo pipefail
umask 022
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

log() { printf 'conformance: %s\n' "$*" >&2; }
die() { printf 'conformance: error: %s\n' "$*" >&2; exit 1; }

runtime=/usr/bin/crun
ociguard=''
delegate=/usr/bin/crun
policy_dir=''
name=''
out=''
timeout_s=120
tests=''
keep=0
src=${RUNTIME_TOOLS_SRC:-}
default_src=/work/.mirror/opencontainers+runtime-tools/repo
build=${RUNTIME_TOOLS_BUILD:-/tmp/rt-build/runtime-tools}
GO=${GO:-/usr/lib/go-1.22/bin/go}

while (($#)); do
    case $1 in
        --runtime) runtime=$2; shift 2 ;;
        --ociguard) ociguard=$2; shift 2 ;;
        --delegate) delegate=$2; shift 2 ;;
        --policy-dir) policy_dir=$2; shift 2 ;;
        --name) name=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --tests) tests=$2; shift 2 ;;
        --src) src=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ $timeout_s =~ ^[0-9]+$ ]] || die "--timeout wants seconds, got '$timeout_s'"

# ------------------------------------------------------------ source
if [[ -z $src && -d $default_src ]]; then src=$default_src; fi
if [[ -z $src || ! -d $src ]]; then
    printf 'conformance: runtime-tools source not found%s.\n' "${src:+ at $src}" >&2
    printf 'conformance: set RUNTIME_TOOLS_SRC (or --src) to a checkout or a bare git dir of\n' >&2
    printf 'conformance: github.com/opencontainers/runtime-tools; it vendors its Go dependencies.\n' >&2
    exit 2
fi
if [[ -f $src/go.mod && -d $src/validation ]]; then
    src_kind=tree
    src_id=$( { [[ -e $src/.git ]] && git -C "$src" rev-parse HEAD 2>/dev/null; } || find "$src" -path "$src/.git" -prune -o -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
elif git --git-dir="$src" rev-parse --verify -q HEAD^{commit} >/dev/null 2>&1; then
    src_kind=git
    src_id=$(git --git-dir="$src" rev-parse HEAD)
else
    printf 'conformance: %s is neither a runtime-tools checkout (go.mod, validation/) nor a git dir\n' "$src" >&2
    exit 2
fi

[[ $(id -u) -eq 0 ]] || die "the suite creates containers: run as root"

# ------------------------------------------------------------ Go
# Debian 12's Go is 1.19; runtime-tools' go.mod wants 1.21 or later.
if [[ ! -x $GO ]]; then
    [[ $GO == /usr/lib/go-1.22/bin/go ]] || die "GO=$GO is not executable"
    command -v apt-get >/dev/null || die "no $GO and no apt-get to install golang-1.22-go"
    if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding bookworm-backports to /etc/apt/sources.list.d/bookworm-backports.list"
        echo 'deb http://deb.debian.org/debian bookworm-backports main' >/etc/apt/sources.list.d/bookworm-backports.list
    fi
    log "installing golang-1.22-go from bookworm-backports"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports golang-1.22-go >&2
    [[ -x $GO ]] || die "golang-1.22-go installed, but there is no $GO"
fi

# ------------------------------------------------------------ build
# Bump when the recipe below changes, to force a rebuild.
RECIPE=1
# crun 1.8.1 refuses a config.json whose ociVersion is newer than the spec it implements, and the
# suite writes the version of its vendored runtime-spec (specs-go.Version, 1.3.0 at the time of
# writing) into every config it generates (generate.New) and checks against it (validate). The
# suite has no option for it, so the build copy's vendored specs-go/version.go is edited to say
# 1.1.0: what crun 1.8.1 and runc 1.1 accept. Fields newer than 1.1 are omitempty and unused by
# the tests that pass here, so the configs stay valid 1.1.0 configs.
SPEC_VERSION=${RUNTIME_TOOLS_SPEC_VERSION:-1.1.0}
[[ $SPEC_VERSION =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] || die "RUNTIME_TOOLS_SPEC_VERSION must be X.Y.Z"
spec_major=${BASH_REMATCH[1]} spec_minor=${BASH_REMATCH[2]} spec_patch=${BASH_REMATCH[3]}
go_version=$("$GO" env GOVERSION)
goarch=$("$GO" env GOARCH)
stamp="src=$src_id recipe=$RECIPE spec=$SPEC_VERSION go=$go_version"

# The suite's tests untar rootfs-$GOARCH.tar.gz from their working directory into each bundle
# and copy ./runtimetest into it. runtime-tools ships a 2018 Gentoo busybox tarball; ours is the
# repo's fixture rootfs (Debian's static busybox and its applets, test-bundles/build.sh).
log "fixture rootfs (test-bundles/build.sh)"
OCIGUARD_SKIP_CAPTURE=1 "$repo/test-bundles/build.sh"
fixture_tar=$repo/test-bundles/out/image.tar

if [[ -f $build/.stamp && $(<"$build/.stamp") == "$stamp" && -x $build/run/runtimetest ]]; then
    log "runtime-tools build up to date ($build)"
else
    log "building runtime-tools ${src_id:0:12} with $go_version in $build"
    rm -rf "$build"
    mkdir -p "$build/src" "$build/run/bin"
    if [[ $src_kind == git ]]; then
        git --git-dir="$src" archive --format=tar HEAD | tar -x -C "$build/src"
    else
        tar -C "$src" --exclude=./.git -cf - . | tar -x -C "$build/src"
    fi
    ver=$build/src/vendor/github.com/opencontainers/runtime-spec/specs-go/version.go
    [[ -f $ver ]] || die "no vendored $ver: is this runtime-tools?"
    sed -i -E \
        -e "s/^(\s*VersionMajor\s*=\s*)[0-9]+/\1$spec_major/" \
        -e "s/^(\s*VersionMinor\s*=\s*)[0-9]+/\1$spec_minor/" \
        -e "s/^(\s*VersionPatch\s*=\s*)[0-9]+/\1$spec_patch/" \
        -e 's/^(\s*VersionDev\s*=\s*)".*"/\1""/' "$ver"
    for part in "Major = $spec_major" "Minor = $spec_minor" "Patch = $spec_patch"; do
        grep -Eq "Version${part% = *}\s*=\s*${part#* = }\b" "$ver" || die "could not set the spec version in $ver"
    done
    # Everything from vendor/, nothing from the network (there is none on CI machines).
    # runtimetest runs inside the busybox rootfs: static, as runtime-tools' Makefile builds it.
    (
        cd "$build/src"
        export GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local \
            GOCACHE=$build/gocache GOPATH=$build/gopath CGO_ENABLED=0
        nice "$GO" build -p 1 -trimpath -tags 'netgo osusergo' -o "$build/run/runtimetest" ./cmd/runtimetest
        # As the Makefile's validation-executables target: one binary per validation/*/*.go
        # (all but util); built in one go into a directory, then named *.t as there.
        nice "$GO" build -p 1 -trimpath -o "$build/run/bin/" ./validation/...
    ) >&2 || die "go build failed"
    for f in "$build"/run/bin/*; do mv "$f" "$f.t"; done
    printf '%s\n' "$stamp" >"$build/.stamp"
fi
[[ -s $fixture_tar ]] || die "test-bundles/build.sh made no $fixture_tar"
gzip -n -c "$fixture_tar" >"$build/run/rootfs-$goarch.tar.gz.tmp"
mv -f "$build/run/rootfs-$goarch.tar.gz.tmp" "$build/run/rootfs-$goarch.tar.gz"

if [[ -z $tests ]]; then
    tests=$(cd "$build/run/bin" && ls -- *.t | sed 's/\.t$//' | sort | tr '\n' ' ')
fi

# ------------------------------------------------------------ runtime under test
work=$(mktemp -d /tmp/rt-conformance.XXXXXX)
run_tmp=$work/tmp
# as /tmp: a container in a user namespace must be able to reach its bundle
chmod 0755 "$work"
mkdir -p -m 1777 "$run_tmp"

version_label() { # "crun version 1.8.1" -> "crun 1.8.1"
    local line
    line=$("$1" --version 2>/dev/null | head -n1 || true)
    line=${line/ version / }
    echo "${line:-$(basename "$1")}"
}

if [[ -n $ociguard ]]; then
    [[ -x $ociguard ]] || die "--ociguard $ociguard is not executable"
    ociguard=$(realpath "$ociguard")
    cfgdir=$work/ociguard
    mkdir -p "$cfgdir/policies" "$cfgdir/state" "$cfgdir/spool" "$cfgdir/log"
    chmod 0755 "$cfgdir" "$cfgdir/policies"
    [[ -n $policy_dir ]] || policy_dir=$cfgdir/policies
    hook=$(dirname "$ociguard")/ociguard-hook
    [[ -x $hook ]] || hook=/usr/local/bin/ociguard-hook
    # A private config: ociguard's defaults point at /etc, /run and /var/log, which this run must
    # not touch. The identity hooks are injected as on a node (best-effort: with no ociguardd
    # listening on monitor_socket they spool into spool_dir and the container runs).
    cat >"$cfgdir/config.toml" <<EOF
# Generated by scripts/conformance.sh for one conformance run.
runtime = "$delegate"
policy_dir = "$policy_dir"
decision_log = "$cfgdir/log/decisions.jsonl"
state_dir = "$cfgdir/state"
hook_path = "$hook"
monitor_socket = "$cfgdir/state/monitor.sock"
spool_dir = "$cfgdir/spool"
EOF
    chmod 0644 "$cfgdir/config.toml"
    wrapper=$cfgdir/runtime
    cat >"$wrapper" <<EOF
#!/bin/sh
# The suite runs \$RUNTIME with runc's arguments; this points ociguard at the test config.
OCIGUARD_CONFIG='$cfgdir/config.toml' exec '$ociguard' "\$@"
EOF
    chmod 0755 "$wrapper"
    runtime_cmd=$wrapper
    if [[ $delegate == builtin ]]; then dlabel=builtin
    elif [[ $delegate == /* ]]; then dlabel=$(version_label "$delegate")
    else dlabel=$delegate; fi
    [[ -n $name ]] || name="ociguard->$dlabel"
else
    [[ -x $runtime ]] || die "--runtime $runtime is not executable"
    runtime=$(realpath "$runtime")
    runtime_cmd=$runtime
    [[ -n $name ]] || name=$(version_label "$runtime")
fi

slug=$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '-' | tr -s '-')
[[ -n $out ]] || out=$repo/target/conformance/$slug
rm -rf "$out"
mkdir -p "$out"
if [[ -n $ociguard ]]; then cp "$cfgdir/config.toml" "$out/ociguard-config.toml"; fi

# Containers this run left behind: those whose bundle is under our TMPDIR (the suite makes every
# bundle with os.MkdirTemp). Other containers on the host are not ours to touch.
cleanup_containers() {
    local id bundle n=0
    while read -r id bundle; do
        [[ $bundle == "$run_tmp"/* ]] || continue
        "$runtime_cmd" kill "$id" KILL >/dev/null 2>&1 || true
        "$runtime_cmd" delete -f "$id" >/dev/null 2>&1 || "$runtime_cmd" delete --force "$id" >/dev/null 2>&1 || true
        n=$((n + 1))
    done < <("$runtime_cmd" list 2>/dev/null | awk 'NR > 1 { print $1, $4 }')
    echo "$n"
}

# Mounts a container left in the host's mount namespace under our TMPDIR (seen with crun 1.8.1:
# proc, dev, sys of one bundle propagate out): unmounted, deepest first.
cleanup_mounts() {
    local m n=0
    while read -r m; do
        umount -l "$m" 2>/dev/null && n=$((n + 1))
    done < <(findmnt -rn -o TARGET | awk -v p="$run_tmp/" 'index($0, p) == 1' | sort -r)
    echo "$n"
}

# The cgroups the suite asks for (runtime-tools' cgroups.AbsCgroupPath "/cgrouptest" and
# RelCgroupPath "testdir/cgrouptest/container"): the runtime removes the leaf on delete, not the
# parents it made. Those that did not exist before this run are removed (rmdir: empty ones only).
cg_names=(cgrouptest testdir)
cg_before=()
for h in /sys/fs/cgroup /sys/fs/cgroup/*/; do
    for n in "${cg_names[@]}"; do [[ -d ${h%/}/$n ]] && cg_before+=("${h%/}/$n"); done
done
cleanup_cgroups() {
    local h n d k=0
    for h in /sys/fs/cgroup /sys/fs/cgroup/*/; do
        for n in "${cg_names[@]}"; do
            d=${h%/}/$n
            [[ -d $d ]] || continue
            [[ " ${cg_before[*]} " == *" $d "* ]] && continue
            find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
            [[ -d $d ]] || k=$((k + 1))
        done
    done
    echo "$k"
}

finish() {
    local rc=$?
    cleanup_containers >/dev/null 2>&1 || true
    cleanup_mounts >/dev/null 2>&1 || true
    cleanup_cgroups >/dev/null 2>&1 || true
    if ((keep)); then log "kept $work"; else rm -rf "$work" 2>/dev/null || true; fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ run
# TAP, as the suite's tap-go writes it: "ok N desc", "not ok N desc", "ok N # skip why" at the
# start of a line; YAML diagnostic blocks indented by two spaces ("  ---" ... "  ..."), written
# after a result (SpecErrorOK) or, by RuntimeInsideValidate, before it; "# ..." comments. A
# block belongs to the result before it, or to the one after it when it follows none. Lines indented
# further (a nested runtimetest's own TAP inside a YAML "stdout:") are diagnostics, not results.
# Some tests (hooks, prestart, poststart, poststop and their *_fail) report no results at all:
# they print "1..0" and, on failure, a YAML block with an "error" and no result line. Such an
# orphan block (no result right before or right after it) counts as one "not ok".
# Output: "ok N", "notok N", "skip N", "plan N", "hasplan 0|1" lines on stdout; each failure
# with its YAML block(s) to the file failfile.
parse_tap='
function endfail() { if (failbuf != "") printf "%s", failbuf > failfile; failbuf = "" }
function orphan(  e) {
    e = pending; sub(/^.*"error": *"/, "", e); sub(/(\\n|").*$/, "", e)
    if (e == pending) e = "diagnostic"
    notok++
    printf "not ok - (no result line) %s\n%s", e, pending > failfile
}
# a pending block that neither followed nor precedes a result is an orphan
function resolve(nextisresult) {
    if (pending != "" && !nextisresult && pending_prev !~ /^result/) orphan()
    if (!nextisresult) pending = ""
}
inyaml              { blk = blk $0 "\n"
                      if ($0 ~ /^  \.\.\.$/) {
                          inyaml = 0
                          if (pending != "") resolve(0)
                          if (blk_prev == "result_fail") failbuf = failbuf blk
                          pending = blk; pending_prev = blk_prev; prev = "block"
                      }
                      next }
/^  ---$/           { inyaml = 1; blk = $0 "\n"; blk_prev = prev; next }
/^not ok/           { endfail(); notok++
                      failbuf = $0 "\n"
                      if (pending != "" && pending_prev !~ /^result/) failbuf = failbuf pending
                      pending = ""; prev = "result_fail"; next }
/^ok/               { endfail(); pending = ""
                      if (tolower($0) ~ /# *skip/) skip++; else ok++
                      prev = "result_ok"; next }
/^#/                { if (failbuf != "") failbuf = failbuf $0 "\n"; next }   # "# expect: 1, actual: 2"
/^  /               { next }
/^1\.\.[0-9]+/       { endfail(); resolve(0); sub(/^1\.\./, ""); plan = $0 + 0; hasplan = 1; prev = "plan"; next }
/^TAP version/      { prev = "header"; next }
# anything else continues the multi-line description of a result ("...\nRefer to: URL")
                    { next }
END { if (inyaml) { pending = blk; pending_prev = blk_prev }
      endfail(); resolve(0)
      printf "ok %d\nnotok %d\nskip %d\nplan %d\nhasplan %d\n", ok, notok, skip, plan, hasplan }
'

total_ok=0 total_notok=0 total_skip=0 nfiles=0
failures=$out/failures.txt
: >"$failures"
printf 'test\tok\tnot_ok\tskip\texit\tseconds\tnote\n' >"$out/results.tsv"
log "running $(wc -w <<<"$tests") test files against $name ($runtime_cmd), ${timeout_s}s each; output in $out"
for t in $tests; do
    bin=$build/run/bin/$t.t
    [[ -x $bin ]] || die "no test '$t' (have: $(cd "$build/run/bin" && ls | sed 's/\.t$//' | tr '\n' ' '))"
    nfiles=$((nfiles + 1))
    start=$(date +%s)
    set +e
    (cd "$build/run" && TMPDIR=$run_tmp RUNTIME=$runtime_cmd \
        timeout --kill-after=10 "$timeout_s" "$bin" >"$out/$t.tap" 2>"$out/$t.stderr" </dev/null)
    rc=$?
    set -e
    secs=$(( $(date +%s) - start ))
    : >"$work/fail"
    eval "$(awk -v failfile="$work/fail" "$parse_tap" "$out/$t.tap" | sed 's/^\([a-z]*\) \([0-9]*\)$/r_\1=\2/')"
    note=''
    # A hang, an abort (util.Fatal exits 1) or fewer results than planned: one failure each, so
    # a test that never reported does not vanish from the totals. A test that ran to the end,
    # exited 0 and reported neither a result nor an error (the hook tests, process_rlimits_fail:
    # they only print errors) passed: one "ok".
    nres=$((r_ok + r_notok + r_skip))
    if ((rc == 124 || rc == 137)); then
        note=timeout
        r_notok=$((r_notok + 1))
        printf 'not ok - timeout (killed after %ss)\n' "$timeout_s" >>"$work/fail"
    elif ((rc != 0)) || ((nres < r_plan)); then
        note="exit $rc, $nres of ${r_plan} planned results"
        r_notok=$((r_notok + 1))
        printf 'not ok - aborted: %s\n  ---\n  stderr: |\n%s\n  ...\n' "$note" \
            "$(tail -n 20 "$out/$t.stderr" | sed 's/^/    /')" >>"$work/fail"
    elif ((nres == 0)); then
        note="no results and no error reported: counted as 1 ok"
        r_ok=1
    fi
    left=$(cleanup_containers)
    if ((left > 0)); then note="${note:+$note; }deleted $left leftover container(s)"; fi
    left=$(cleanup_mounts)
    if ((left > 0)); then note="${note:+$note; }unmounted $left leaked mount(s)"; fi
    left=$(cleanup_cgroups)
    if ((left > 0)); then note="${note:+$note; }removed $left leftover cgroup(s)"; fi
    if [[ -s $work/fail ]]; then
        # the whole diagnostic stays in $t.tap; here long lines (ociguard's precompiled seccomp
        # filter in the hook state, 10 KiB of base64) are cut
        { printf '=== %s\n' "$t"; cut -c1-1500 "$work/fail"; echo; } >>"$failures"
    fi
    printf '%s\t%d\t%d\t%d\t%d\t%d\t%s\n' "$t" "$r_ok" "$r_notok" "$r_skip" "$rc" "$secs" "$note" >>"$out/results.tsv"
    log "$(printf '%-40s %3d ok %3d not ok %3d skip  %3ds %s' "$t" "$r_ok" "$r_notok" "$r_skip" "$secs" "$note")"
    total_ok=$((total_ok + r_ok)) total_notok=$((total_notok + r_notok)) total_skip=$((total_skip + r_skip))
done

if [[ -n $ociguard ]]; then
    cp "$cfgdir/log/decisions.jsonl" "$out/ociguard-decisions.jsonl" 2>/dev/null || true
fi
summary="$name: $total_ok ok, $total_notok not ok, $total_skip skip (of $((total_ok + total_notok + total_skip))) in $nfiles test files"
printf '%s\n' "$summary" >"$out/summary.txt"
{
    printf 'runtime-tools %s (spec version patched to %s), %s\n' "${src_id:0:12}" "$SPEC_VERSION" "$go_version"
    printf 'runtime command: %s\n' "$runtime_cmd"
} >>"$out/summary.txt"
printf '%s\n' "$summary"
