# ociguard — see README.md. Every target that needs system packages installs them itself
# (scripts/host-setup.sh, idempotent and fast when everything is present).

CARGO   ?= cargo
PREFIX  ?= /usr/local
# build.target = "host-tuple" (.cargo/config.toml): artifacts are under target/<host triple>/.
HOST    := $(shell rustc -vV | sed -n "s/^host: //p")
RELEASE := target/$(HOST)/release
# libseccomp is linked statically (.cargo/config.toml); tell libseccomp-sys where libseccomp.a is.
SECCOMP_LIBDIR := $(shell pkg-config --variable=libdir libseccomp 2>/dev/null)
ifneq ($(SECCOMP_LIBDIR),)
export LIBSECCOMP_LIB_PATH := $(SECCOMP_LIBDIR)
endif
# The ociguard and ociguard-hook that are installed, tested and benchmarked: static musl builds
# when that target can be had, else the glibc ones (scripts/build-static.sh says why).
MUSL    := $(subst -gnu,-musl,$(HOST))
SHIM    := target/static/ociguard
HOOK    := target/static/ociguard-hook
export OCIGUARD_TEST_OCIGUARD := $(CURDIR)/$(SHIM)
export OCIGUARD_TEST_OCIGUARD_HOOK := $(CURDIR)/$(HOOK)

.PHONY: all build demo test unit lint bench install image clean fixtures host-test host-demo fuzz conformance

all: build

build:
	$(CARGO) build --release --workspace --bins
	CARGO="$(CARGO)" scripts/build-static.sh $(MUSL) ociguard-shim ociguard $(RELEASE)/ociguard $(SHIM)
	CARGO="$(CARGO)" scripts/build-static.sh $(MUSL) ociguard-hooks ociguard-hook $(RELEASE)/ociguard-hook $(HOOK)

host-demo:
	scripts/host-setup.sh demo

host-test:
	scripts/host-setup.sh test

fixtures: host-test
	test-bundles/build.sh

# Runs a real container through ociguard with a policy in effect and shows the difference.
demo: host-demo build
	OCIGUARD_SKIP_CAPTURE=1 test-bundles/build.sh
	scripts/demo.sh $(SHIM)

# Unit tests need nothing; integration tests run real crun/podman/containerd as root and
# print "skip: <reason>" when they cannot. They also run the other packages' binaries
# (ociguardd, ociguard-hook, ociguardctl), which cargo does not build for a package's tests:
# `build` does (a missing one fails the test, it is never a skip).
# The container tests run twice: delegating to crun, then to the runtime built into ociguard
# (youki's libcontainer). One suite, two delegates (OCIGUARD_TEST_DELEGATE; tests that check
# crun itself skip visibly under the builtin one).
BUILTIN_TESTS := crun identity fail_closed egress egress_nflog behavior profile engines engine_matrix seccomp_bpf
test: fixtures build
	$(CARGO) test --release --workspace -- --test-threads=2
	OCIGUARD_TEST_DELEGATE=builtin $(CARGO) test --release -p ociguard-shim \
	  $(addprefix --test ,$(BUILTIN_TESTS)) -- --test-threads=2

unit:
	$(CARGO) test --workspace --lib

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) deny --log-level error check licenses bans sources

bench: host-test build
	OCIGUARD_SKIP_CAPTURE=1 test-bundles/build.sh
	OCIGUARD_FORCE_CAPTURE=0 test-bundles/build.sh
	$(CARGO) run --release -p ociguard-bench -- --ociguard $(SHIM) --hook $(HOOK) --bin-dir $(RELEASE)
	$(RELEASE)/ociguard-monitor-bench --ociguardd $(RELEASE)/ociguardd --hook $(HOOK)

# Fuzz the parsers of untrusted input for FUZZ_SECONDS each (fuzz/README.md): nightly and
# cargo-fuzz, seeds from test-bundles/ (captured when possible) and the repo's own files. Not
# part of `test`, which runs the kept crashers on stable (fuzz/harness).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= config_json policy_toml hook_state monitor_protocol crio_labels nflog profile_decode
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	rustup run nightly rustc -V >/dev/null || rustup toolchain install nightly --profile minimal
	test-bundles/build.sh || echo "skip: no captured engine configs as seeds"
	fuzz/seed.sh
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t && \
	  cargo +nightly fuzz run -O --debug-assertions $$t corpus/$$t seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
	    -print_final_stats=1 || exit 1; \
	done

# OCI runtime-tools' validation suite, built from its source (RUNTIME_TOOLS_SRC: a checkout or a
# bare git dir; without it the script exits 2), against crun, ociguard -> crun and ociguard ->
# builtin (youki's libcontainer). Needs root. Not part of `test`: docs/conformance.md.
conformance: build
	scripts/conformance.sh --runtime /usr/bin/crun
	scripts/conformance.sh --ociguard $(SHIM) --delegate /usr/bin/crun
	scripts/conformance.sh --ociguard $(SHIM) --delegate builtin --name "ociguard->builtin"

install: build
	install -D -m 0755 $(SHIM) $(DESTDIR)$(PREFIX)/bin/ociguard
	install -D -m 0755 $(RELEASE)/ociguardctl $(DESTDIR)$(PREFIX)/bin/ociguardctl
	install -D -m 0755 $(RELEASE)/ociguardd $(DESTDIR)$(PREFIX)/bin/ociguardd
	install -D -m 0755 $(HOOK) $(DESTDIR)$(PREFIX)/bin/ociguard-hook
	install -d -m 0755 $(DESTDIR)/etc/ociguard/policies
	# An operator's config and policies are never overwritten: installed only where absent.
	test -e $(DESTDIR)/etc/ociguard/config.toml || install -m 0644 deploy/config.toml $(DESTDIR)/etc/ociguard/config.toml
	test -e $(DESTDIR)/etc/ociguard/policies/default.toml || install -m 0644 deploy/policies/default.toml $(DESTDIR)/etc/ociguard/policies/default.toml
	install -d -m 0755 $(DESTDIR)$(PREFIX)/share/ociguard/examples
	cp -r deploy/policies deploy/engines deploy/kubernetes $(DESTDIR)$(PREFIX)/share/ociguard/examples/
	install -D -m 0644 deploy/systemd/ociguardd.service $(DESTDIR)/etc/systemd/system/ociguardd.service
	@echo "installed; next: systemctl daemon-reload && systemctl enable --now ociguardd; ociguardctl setup ENGINE"

# The node image of deploy/kubernetes/ (built locally; push it where your nodes pull from). Its
# context is staged in target/image/: the release binaries (static), Debian's busybox-static for
# the scripts' shell, the scripts and the default config.
IMAGE   ?= ociguard:dev
CONTAINER_ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
BUSYBOX ?= /bin/busybox

image: build
	@if ldd $(BUSYBOX) >/dev/null 2>&1; then echo "$(BUSYBOX) is dynamically linked: install busybox-static" >&2; exit 1; fi
	rm -rf target/image
	mkdir -p target/image/bin target/image/share
	cp $(SHIM) $(RELEASE)/ociguardd $(RELEASE)/ociguardctl $(HOOK) target/image/bin/
	cp $(BUSYBOX) target/image/busybox
	cp deploy/kubernetes/install.sh deploy/kubernetes/sync-policies.sh deploy/config.toml target/image/share/
	$(CONTAINER_ENGINE) build -t $(IMAGE) -f deploy/kubernetes/Dockerfile target/image

clean:
	$(CARGO) clean
	rm -rf test-bundles/out
