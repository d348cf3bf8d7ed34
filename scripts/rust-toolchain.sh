#!/usr/bin/env bash
# Make the Rust release that rust-toolchain.toml pins usable, offline, before any cargo call.
#
# Invariant: after this script succeeds, `rustc` in this repository is the pinned release, and
# the musl targets and components of the rustup toolchain it stands for are visible to it.
#
# How: when rustup already has the pinned release, nothing is done. When it does not but its
# `stable` toolchain *is* that release (a machine or CI image where only `stable` was
# installed, and nothing can be downloaded), the pinned name is pointed at stable's directory
# (`rustup toolchain link` refuses release-shaped names such as `1.95.0`, so the link is made
# in rustup's toolchains directory, where rustup looks the name up). Otherwise it asks rustup
# to install the release, and says what to do if that fails. A link whose target no longer
# reports the pinned release (stable was updated) is replaced or refused, never trusted.
set -euo pipefail
cd "$(dirname "$0")/.."

channel=$(sed -n 's/^channel *= *"\([^"]*\)".*/\1/p' rust-toolchain.toml)
[ -n "$channel" ] || { echo "rust-toolchain: no channel in rust-toolchain.toml" >&2; exit 1; }

if ! command -v rustup >/dev/null 2>&1; then
  # Without rustup the toolchain file is not consulted: the rustc on PATH is what builds.
  have=$(rustc --version 2>/dev/null | awk '{print $2}')
  case "$have" in
    "$channel"|"$channel".*) exit 0 ;;
    *) echo "rust-toolchain: rustc is ${have:-missing}, rust-toolchain.toml pins $channel" >&2; exit 1 ;;
  esac
fi

# The release a rustup toolchain name resolves to, or nothing when it is not installed.
# RUSTUP_TOOLCHAIN overrides the toolchain file, so this never triggers an install.
release_of() { RUSTUP_AUTO_INSTALL=0 RUSTUP_TOOLCHAIN="$1" rustc --version 2>/dev/null | awk '{print $2}'; }
matches() { case "$1" in "$channel"|"$channel".*) return 0 ;; *) return 1 ;; esac; }

pinned=$(release_of "$channel" || true)
if [ -n "$pinned" ] && matches "$pinned"; then
  exit 0
fi

host=$(RUSTUP_TOOLCHAIN=stable rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)
home=${RUSTUP_HOME:-$HOME/.rustup}
link="$home/toolchains/$channel-$host"
stable=$(release_of stable || true)

if [ -L "$link" ] && [ -n "$pinned" ]; then
  echo "rust-toolchain: $link reports $pinned, not $channel; replacing it" >&2
  rm -f "$link"
fi

if [ -n "$host" ] && [ -n "$stable" ] && matches "$stable" && [ ! -e "$link" ]; then
  sysroot=$(RUSTUP_TOOLCHAIN=stable rustc --print sysroot)
  ln -s "$sysroot" "$link"
  echo "rust-toolchain: $channel-$host -> $sysroot (rustup's stable is $stable)"
  exit 0
fi

echo "rust-toolchain: installing $channel with rustup (stable here is ${stable:-missing})"
if rustup toolchain install "$channel" --profile minimal --component clippy,rustfmt \
     --target x86_64-unknown-linux-musl; then
  exit 0
fi
echo "rust-toolchain: $channel is not installed and could not be downloaded; install it with" >&2
echo "  rustup toolchain install $channel --component clippy,rustfmt --target x86_64-unknown-linux-musl" >&2
exit 1
