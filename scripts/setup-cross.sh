#!/usr/bin/env bash
# Install what building for another architecture needs, and print the directory to put first on
# PATH: the Rust target (rustup), and cargo-zigbuild with Zig as the cross C compiler and linker
# (the vendored OpenSSL is C), both from PyPI into a virtual environment of their own under
# target/cross-tools (nothing is installed system-wide but python3-venv, if it is missing).
# With `--qemu`, also qemu-user-static, to run the result on this machine.
#
# Usage: scripts/setup-cross.sh RUST_TARGET [--qemu]    (prints the tools' bin directory)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/setup-cross.sh RUST_TARGET [--qemu]}
want_qemu=${2:-}

apt_install() { scripts/apt-install.sh setup-cross "$@"; }

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  if ! command -v rustup >/dev/null 2>&1; then
    echo "setup-cross: the $target Rust target is needed; install Rust with rustup, then: rustup target add $target" >&2
    exit 1
  fi
  echo "setup-cross: adding the $target Rust target" >&2
  rustup target add "$target" >&2
fi

tools=target/cross-tools
if [ ! -x "$tools/bin/cargo-zigbuild" ] || ! "$tools/bin/python3" -m ziglang version >/dev/null 2>&1; then
  python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' >/dev/null 2>&1 || apt_install python3-venv
  rm -rf "$tools"
  echo "setup-cross: installing ziglang and cargo-zigbuild from PyPI into $tools" >&2
  python3 -m venv "$tools" >&2
  "$tools/bin/pip" install -q --disable-pip-version-check 'ziglang>=0.13' 'cargo-zigbuild>=0.19' >&2
fi

if [ "$want_qemu" = --qemu ]; then
  arch=${target%%-*}
  command -v "qemu-$arch-static" >/dev/null 2>&1 || apt_install qemu-user-static
fi
echo "$PWD/$tools/bin"
