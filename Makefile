# sms-sender: build, test, smoke test, demo, image, install, dist. Every target installs what it
# needs first.
HOST_ARCH    := $(shell uname -m)
MUSL_TARGET  := $(HOST_ARCH)-unknown-linux-musl
## TARGET: the Rust target `make build` builds (default: this machine's, static musl);
## another architecture's is cross-built with cargo-zigbuild (scripts/setup-cross.sh).
TARGET       ?= $(MUSL_TARGET)
TARGET_ARCH   = $(firstword $(subst -, ,$(TARGET)))
BIN           = target/$(TARGET)/release/sms-sender
ARM64_TARGET := aarch64-unknown-linux-musl
AMD64_TARGET := x86_64-unknown-linux-musl
CARGO        ?= cargo
PREFIX       ?= /usr/local
DESTDIR      ?=

.PHONY: all toolchain setup build build-arm64 test soak smoke smoke-arm64 demo image image-multiarch image-smoke systemd-check install dist bench bench-quick bench-scaled bench-allocator bench-cpu profile bench-instructions bench-baseline fuzz lint fmt clean

all: build

## toolchain: make the Rust release rust-toolchain.toml pins usable before any cargo call (when
## rustup's stable is that release and nothing can be downloaded, the pinned name is linked to it)
toolchain:
	@scripts/rust-toolchain.sh

## setup: install the musl target, musl-tools and PostgreSQL if missing
setup: toolchain
	@scripts/setup.sh

## build: the static release binary for TARGET (musl, vendored OpenSSL); fails if it is dynamic
## or not for TARGET's architecture. `make build TARGET=aarch64-unknown-linux-musl` (or `make
## build-arm64`) cross-builds on x86-64 with cargo-zigbuild, about 5 minutes on 2 cores.
build: setup
ifeq ($(TARGET_ARCH),$(HOST_ARCH))
	$(CARGO) build --release --locked --target $(TARGET) -p sms-sender
else
	@tools=$$(scripts/setup-cross.sh $(TARGET)) && PATH="$$tools:$$PATH" \
		$(CARGO) zigbuild --release --locked --target $(TARGET) -p sms-sender
endif
	@! readelf -l $(BIN) | grep -q INTERP \
		|| { echo "build: $(BIN) is dynamically linked:"; readelf -l $(BIN) | grep -A1 INTERP; exit 1; }
	@machine=$$(readelf -h $(BIN) | sed -n 's/^ *Machine: *//p'); \
	case "$(TARGET_ARCH):$$machine" in x86_64:*X86-64*|aarch64:AArch64) ;; \
		*) echo "build: $(BIN) is for $$machine, not $(TARGET_ARCH)"; exit 1;; esac; \
	echo "build: $(BIN) is static, $$machine, $$(stat -c %s $(BIN)) bytes"

## build-arm64: `make build` for aarch64-unknown-linux-musl (Graviton, Ampere, Raspberry Pi 4/5)
build-arm64:
	$(MAKE) build TARGET=$(ARM64_TARGET)

## test: unit, double and end-to-end tests against real PostgreSQL
test: setup
	$(CARGO) test --workspace --locked

## soak: the seeded exactly-once soak (three instances, random faults and kills) at length;
## `make test` runs a short one. Reproduce a run with SOAK_SEED=N; size it with SOAK_MESSAGES.
SOAK_MESSAGES ?= 1000
SOAK_SEED     ?= 1
soak: setup
	SOAK_MESSAGES=$(SOAK_MESSAGES) SOAK_SEED=$(SOAK_SEED) $(CARGO) test --locked --test multi_instance soak -- --nocapture

## smoke: the static binary run as the image runs it, against the doubles
smoke: build
	$(CARGO) run --quiet --locked -p sms-sender-doubles --bin sms-local -- smoke $(BIN)

## smoke-arm64: the aarch64 build, run as `make smoke` runs the native one, under qemu-user
## (natively on an aarch64 machine)
ARM64_RUNNER = $(if $(filter aarch64,$(HOST_ARCH)),,--runner qemu-aarch64-static)
smoke-arm64: build-arm64
	@scripts/setup-cross.sh $(ARM64_TARGET) $(if $(ARM64_RUNNER),--qemu) >/dev/null
	$(CARGO) run --quiet --locked -p sms-sender-doubles --bin sms-local -- smoke \
		target/$(ARM64_TARGET)/release/sms-sender $(ARM64_RUNNER)

## image: the OCI image (Dockerfile.distroless's final stage) from the static binary, with no
## daemon (buildah, skopeo, umoci): OCI layout in target/image/oci, unpacked runtime bundle in
## target/image/bundle; prints its size.
image: build
	scripts/image.sh $(BIN) target/image

## image-multiarch: one OCI image index with the amd64 and arm64 images (target/image-multiarch/oci,
## tag sms-sender:latest), read back with skopeo; push with
## `skopeo copy --all oci:target/image-multiarch/oci:sms-sender:latest docker://REGISTRY/sms-sender:TAG`
image-multiarch:
	$(MAKE) build TARGET=$(AMD64_TARGET)
	$(MAKE) build TARGET=$(ARM64_TARGET)
	scripts/image-index.sh target/image-multiarch target/$(AMD64_TARGET)/release/sms-sender \
		target/$(ARM64_TARGET)/release/sms-sender

## image-smoke: run the built image as its config says (entrypoint, uid 1001, environment; PID 1
## in its own namespaces, chrooted in its root) against the doubles; root only
image-smoke: image
	scripts/check-image-matches-dockerfile.sh target/image
	$(CARGO) run --quiet --locked -p sms-sender-doubles --bin sms-local -- image-smoke target/image/bundle

## systemd-check: the unit in deploy/systemd/ installed with `make install` into a scratch
## DESTDIR, then `systemd-analyze verify` and `systemd-analyze security --offline=yes` (≤ 2.0)
systemd-check: build
	scripts/check-systemd-unit.sh $(BIN)

## install: the binary, the systemd unit and the example environment file under
## $(DESTDIR)$(PREFIX) (bin/, lib/systemd/system/, share/sms-sender/); nothing else
install: build
	scripts/install.sh $(BIN) $(PREFIX) $(DESTDIR)

## dist: per architecture (x86-64, aarch64), target/dist/sms-sender-VERSION-TARGET.tar.gz with the
## binary, the unit, the example env, README.md and LICENSE; and target/dist/SHA256SUMS
dist:
	$(MAKE) build TARGET=$(AMD64_TARGET)
	$(MAKE) build TARGET=$(ARM64_TARGET)
	scripts/dist.sh target/dist $(foreach t,$(AMD64_TARGET) $(ARM64_TARGET),$(t)=target/$(t)/release/sms-sender)

## demo: the real binary against a local PostgreSQL and the doubles
demo: build
	$(CARGO) run --quiet --locked -p sms-sender-doubles --bin sms-local -- demo $(BIN)

## bench: size (and the image's), start time, memory, latency, throughput, calls and CPU of the
## static binary against the local world, over plain HTTP and over TLS (a throwaway CA and local
## TLS terminators, Node), with system calls per message (strace) and the Node original re-created
## as the CPU peer in the same run (about 14 minutes with a baseline); prints the table and
## rewrites BENCHMARKS.md. The doubles are built with --release so that their own speed does not
## distort the figures. BENCH_BASELINE=PATH measures an earlier build in the same run on the
## phases that compare builds, reported side by side (`make bench-baseline` builds one).
BENCH_BASELINE       ?=
BENCH_BASELINE_LABEL ?=
BENCH_BASELINE_ARGS   = $(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE) $(if $(BENCH_BASELINE_LABEL),--baseline-label "$(BENCH_BASELINE_LABEL)"))
bench: build
	$(CARGO) run --quiet --release --locked -p sms-bench -- full $(BIN) --out BENCHMARKS.md $(BENCH_BASELINE_ARGS)

## bench-quick: the same benchmark with small counts (2–3 minutes; CI runs it so it keeps
## working). Fails only if something is broken, not when a target is missed.
bench-quick: build
	$(CARGO) run --quiet --locked -p sms-bench -- quick $(BIN) $(BENCH_BASELINE_ARGS)

## bench-scaled: only scaled mode against the default mode (sql/migrations/002_scaled_mode.sql
## applied or not), fleets of 1, 3 and 10 instances with SENDER_THREADS=4: claim, REST and Realtime
## requests per message (a trickle and a burst of 500), the fleet's idle REST traffic over a
## minute, the burst's wall time (about 4 minutes); replaces its section of BENCHMARKS.md.
bench-scaled: build
	$(CARGO) run --quiet --release --locked -p sms-bench -- scaled $(BIN) --out BENCHMARKS.md

## bench-allocator: the global allocator compared (plain and TLS, 128 sender threads): this build
## (dlmalloc) and the same source built with musl's malloc (`--features system-allocator`), each
## through `sms-bench modes` (memory, CPU, system calls per message); reports in
## target/bench-allocator/. About 15 minutes with the second build.
ALLOC_DIR := target/bench-allocator
bench-allocator: build
	CARGO_TARGET_DIR=target/alloc-variant $(CARGO) build --release --locked --target $(MUSL_TARGET) -p sms-sender --features system-allocator
	mkdir -p $(ALLOC_DIR)
	$(CARGO) run --quiet --release --locked -p sms-bench -- modes $(BIN) --out $(ALLOC_DIR)/dlmalloc.md
	$(CARGO) run --quiet --release --locked -p sms-bench -- modes target/alloc-variant/$(MUSL_TARGET)/release/sms-sender --out $(ALLOC_DIR)/musl-malloc.md

## bench-cpu: only the memory/CPU phase (4 bursts of 5,000, Twilio answering at once): CPU per
## message of this build (and of BENCH_BASELINE, when set), user and system apart. With
## SMS_BENCH_PROFILE='perf record -g -p {pid} -o perf.data' the profiler covers exactly the
## measured bursts; SMS_BENCH_BURST=N makes them smaller (callgrind). See `make profile`.
bench-cpu: build
	$(CARGO) run --quiet --release --locked -p sms-bench -- cpu $(BIN) $(BENCH_BASELINE_ARGS)

## profile: the release build with symbols and frame pointers (target/profiling/), to run
## `make bench-cpu BIN=$(PROFILE_BIN)` under perf or callgrind.
PROFILE_BIN := target/profiling/$(MUSL_TARGET)/profiling/sms-sender
profile: setup
	RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=target/profiling \
		$(CARGO) build --profile profiling --locked --target $(MUSL_TARGET) -p sms-sender
	@echo "profile: $(PROFILE_BIN)"

## bench-instructions: instructions per message of the profiling build under callgrind (the
## user-space work, repeatable whatever else the machine does, unlike CPU time): `make
## bench-cpu` with 4 bursts of CALLGRIND_BURST, the counters zeroed after the idle phase and
## dumped after the last burst to target/profiling/callgrind.out.
CALLGRIND_BURST ?= 300
bench-instructions: profile
	@printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=$(CURDIR)/target/profiling/callgrind.out %s "$$@"\n' \
		"$(CURDIR)/$(PROFILE_BIN)" > target/profiling/under-callgrind && chmod +x target/profiling/under-callgrind
	@rm -f target/profiling/callgrind.out*
	SMS_BENCH_BURST=$(CALLGRIND_BURST) \
	SMS_BENCH_PROFILE="sh -c 'sleep 1; callgrind_control -z {pid} >/dev/null; trap \"callgrind_control -d {pid} >/dev/null; exit\" INT; while :; do sleep 0.2; done'" \
		$(CARGO) run --quiet --release --locked -p sms-bench -- cpu target/profiling/under-callgrind
	@total=$$(callgrind_annotate --auto=no target/profiling/callgrind.out.1 | awk '/PROGRAM TOTALS/ {gsub(",", "", $$1); print $$1}'); \
	echo "bench-instructions: $$total instructions for $$((4 * $(CALLGRIND_BURST))) messages: $$((total / (4 * $(CALLGRIND_BURST)))) per message (target/profiling/callgrind.out.1)"

## bench-baseline: `make bench` with the build from before issue 11 (commit BENCH_BASELINE_REV)
## as the baseline. That binary is built once, in a temporary git worktree with a target dir of
## its own (target/bench-baseline/target, kept for later rebuilds), and kept as
## BENCH_BASELINE_BIN; an existing BENCH_BASELINE_BIN is used as it is.
BENCH_BASELINE_REV ?= 4eff882
BENCH_BASELINE_BIN ?= target/bench-baseline/$(BENCH_BASELINE_REV)/sms-sender
bench-baseline: build $(BENCH_BASELINE_BIN)
	$(MAKE) bench BENCH_BASELINE=$(BENCH_BASELINE_BIN) \
		BENCH_BASELINE_LABEL="built from commit $$(git rev-parse --short $(BENCH_BASELINE_REV)) (make bench-baseline)"

target/bench-baseline/%/sms-sender: | setup
	@set -e; tmp=$$(mktemp -d); trap 'git worktree remove --force "$$tmp/src" 2>/dev/null; rm -rf "$$tmp"' EXIT; \
	git worktree add --detach "$$tmp/src" $* >/dev/null; \
	echo "bench-baseline: building $* in $$tmp/src"; \
	(cd "$$tmp/src" && CARGO_TARGET_DIR="$(CURDIR)/target/bench-baseline/target" \
		$(CARGO) build --release --locked --target $(MUSL_TARGET) -p sms-sender); \
	mkdir -p $(@D); cp "$(CURDIR)/target/bench-baseline/target/$(MUSL_TARGET)/release/sms-sender" $@; \
	echo "bench-baseline: $@"

## fuzz: run each cargo-fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS seconds, starting from
## the sample frames and bodies in fuzz/seeds/ (copied into the untracked fuzz/corpus/). Not run in CI.
## A crash stops the run and leaves the input in fuzz/artifacts/<target>/; replay it with
## `cargo fuzz run -s none <target> <file>`. cargo-fuzz documents nightly, but with
## `--sanitizer none` it works on the stable toolchain as it is: the only nightly flag it would
## pass is -Zsanitizer=address, while the coverage instrumentation libFuzzer needs
## (-Cpasses=sancov-module, -Cllvm-args=-sanitizer-coverage-*) is stable. The decoders are
## forbid(unsafe_code), so AddressSanitizer would add little; FUZZ_SANITIZER=address works on
## stable too, through RUSTC_BOOTSTRAP=1 (it unlocks the -Z flag, and stable's rust-std ships the
## ASan runtime), at a small fraction of the speed.
FUZZ_SECONDS   ?= 60
FUZZ_TARGETS   ?= realtime_frame postgrest_body twilio_body config clock redact
FUZZ_SANITIZER ?= none
fuzz: toolchain
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t && cp fuzz/seeds/$$t/* fuzz/corpus/$$t/ || exit 1; \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
		$(if $(filter none,$(FUZZ_SANITIZER)),,RUSTC_BOOTSTRAP=1) $(CARGO) fuzz run \
			--sanitizer $(FUZZ_SANITIZER) $$t -- -max_total_time=$(FUZZ_SECONDS) \
			-timeout=10 -print_final_stats=1 || exit 1; \
	done

## lint: formatting; clippy on every workspace member (the workspace lints of Cargo.toml),
## warnings as errors; rustdoc with warnings as errors; cargo-deny's offline checks (licenses,
## bans, sources: deny.toml; installed by scripts/cargo-deny.sh when missing); and
## scripts/check-module-deps.sh when it exists.
lint: toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked
	@scripts/cargo-deny.sh --frozen check --hide-inclusion-graph licenses bans sources
	@if [ -x scripts/check-module-deps.sh ]; then scripts/check-module-deps.sh; \
	elif [ -f scripts/check-module-deps.sh ]; then bash scripts/check-module-deps.sh; fi

fmt: toolchain
	$(CARGO) fmt --all

clean: toolchain
	$(CARGO) clean
