#!/usr/bin/env bash
# Run cargo-deny with the given arguments, installing it from crates.io first when it is
# missing (or older than the deny.toml format needs). `make lint` runs the offline checks
# through it: `scripts/cargo-deny.sh --frozen check licenses bans sources`.
#
# Invariant: nothing but crates.io is contacted, and only to install cargo-deny; the checks
# themselves read Cargo.lock, the manifests and deny.toml (advisories, which need the RustSec
# database from GitHub, are not run: see deny.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest release whose deny.toml format (version = 2 sections) this repository uses.
min_version=0.16.0
cargo=${CARGO:-cargo}

have=$($cargo deny --version 2>/dev/null | awk '{print $2}' || true)
if [ -z "$have" ] || [ "$(printf '%s\n%s\n' "$min_version" "$have" | sort -V | head -n1)" != "$min_version" ]; then
  echo "cargo-deny: installing it from crates.io (${have:-not installed}; a few minutes, once)"
  $cargo install cargo-deny --locked
fi
exec $cargo deny "$@"
