# sms-sender: build, test, smoke test, demo. Every target installs what it needs first.
MUSL_TARGET := x86_64-unknown-linux-musl
BIN         := target/$(MUSL_TARGET)/release/sms-sender
CARGO       ?= cargo

.PHONY: all setup build test smoke demo lint fmt clean

all: build

## setup: install the musl target, musl-tools and PostgreSQL if missing
setup:
	@scripts/setup.sh

## build: the static release binary (musl, vendored OpenSSL); fails if it is dynamic
build: setup
	$(CARGO) build --release --locked --target $(MUSL_TARGET) -p sms-sender
	@ldd $(BIN) 2>&1 | grep -Eq 'not a dynamic executable|statically linked' \
		|| { echo "build: $(BIN) is dynamically linked:"; ldd $(BIN); exit 1; }
	@echo "build: $(BIN) is static, $$(stat -c %s $(BIN)) bytes"

## test: unit, double and end-to-end tests against real PostgreSQL
test: setup
	$(CARGO) test --workspace --locked

## smoke: the static binary run as the image runs it, against the doubles
smoke: build
	$(CARGO) run --quiet --locked -p sms-sender-doubles --bin sms-local -- smoke $(BIN)

## demo: the real binary against a local PostgreSQL and the doubles
demo: build
	$(CARGO) run --quiet --locked -p sms-sender-doubles --bin sms-local -- demo $(BIN)

## lint: formatting and clippy, warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
