#!/usr/bin/env bash
# Install what building and testing sms-sender needs on Debian/Ubuntu, root or not:
# the Rust musl target, musl-tools (musl-gcc, for the static build with vendored OpenSSL),
# PostgreSQL server binaries (the tests start their own throwaway clusters), and the CA bundle.
# Anything it cannot install, it names with the exact command to run.
set -euo pipefail

missing_pkgs=()
need() { missing_pkgs+=("$1"); }

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: Rust is not installed. Install it with:" >&2
  echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" >&2
  exit 1
fi

command -v musl-gcc >/dev/null 2>&1 || need musl-tools
command -v make >/dev/null 2>&1 || need make
command -v perl >/dev/null 2>&1 || need perl          # OpenSSL's vendored build runs Perl
command -v gcc >/dev/null 2>&1 || need gcc
[ -f /etc/ssl/certs/ca-certificates.crt ] || need ca-certificates
command -v openssl >/dev/null 2>&1 || need openssl    # the TLS test makes its own CA
# The metrics test checks /metrics with an independent parser: Prometheus' own Python client.
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || need python3-prometheus-client
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && ! command -v pg_config >/dev/null 2>&1 \
   && [ -z "${PG_BIN:-}" ]; then
  need postgresql
fi

if [ ${#missing_pkgs[@]} -gt 0 ]; then
  "$(dirname "$0")/apt-install.sh" setup "${missing_pkgs[@]}"
fi

if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
    echo "setup: adding the x86_64-unknown-linux-musl Rust target"
    rustup target add x86_64-unknown-linux-musl
  fi
elif ! rustc --print target-list >/dev/null 2>&1 || [ ! -d "$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-musl" ]; then
  echo "setup: the x86_64-unknown-linux-musl target is missing and rustup is not available;" >&2
  echo "  install Rust with rustup, then: rustup target add x86_64-unknown-linux-musl" >&2
  exit 1
fi
