#!/usr/bin/env bash
# Install Debian packages for a make target: as root, or through `sudo` when it needs no password;
# otherwise print the exact command to run and fail. The one place the scripts install from apt.
#
# Usage: scripts/apt-install.sh WHO PACKAGE...   (WHO prefixes the messages, e.g. "setup")
set -euo pipefail
who=${1:?usage: scripts/apt-install.sh WHO PACKAGE...}
shift
[ $# -gt 0 ] || exit 0
if [ "$(id -u)" = 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo="sudo"
else
  echo "$who: missing system packages. Run as root:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends $*" >&2
  exit 1
fi
echo "$who: installing $*" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2
$sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
