#!/usr/bin/env bash
# Release archives: per architecture, a tarball with the static binary, the systemd unit, the
# example environment file, README.md and LICENSE (nothing else), and SHA256SUMS over them.
# The archives are reproducible: sorted entries, owner 0:0, every mtime the last commit's time
# (SOURCE_DATE_EPOCH when set), gzip without a timestamp.
#
# Usage: scripts/dist.sh OUT_DIR RUST_TARGET=BINARY...
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/dist.sh OUT_DIR RUST_TARGET=BINARY...}
shift
[ $# -gt 0 ] || { echo "dist: no RUST_TARGET=BINARY given" >&2; exit 2; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
files=(sms-sender sms-sender.service sms-sender.env.example README.md LICENSE)

mkdir -p "$out"
rm -f "$out"/sms-sender-*.tar.gz "$out/SHA256SUMS"
for pair in "$@"; do
  target=${pair%%=*}
  binary=${pair#*=}
  [ -x "$binary" ] || { echo "dist: $binary is missing (make build TARGET=$target)" >&2; exit 1; }
  if readelf -l "$binary" | grep -q 'INTERP'; then
    echo "dist: $binary is dynamically linked" >&2; exit 1
  fi
  name=sms-sender-$version-$target
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  mkdir "$stage/$name"
  install -m 0755 "$binary" "$stage/$name/sms-sender"
  install -m 0644 deploy/systemd/sms-sender.service deploy/systemd/sms-sender.env.example \
    README.md LICENSE "$stage/$name/"
  tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
    -cf - "$name" | gzip -9n > "$out/$name.tar.gz"
  rm -rf "$stage"
  # What went in is exactly the list above.
  got=$(tar -tzf "$out/$name.tar.gz" | grep -v '/$' | sed "s|^$name/||" | sort | tr '\n' ' ')
  want=$(printf '%s\n' "${files[@]}" | sort | tr '\n' ' ')
  [ "$got" = "$want" ] || { echo "dist: $name.tar.gz holds [$got], expected [$want]" >&2; exit 1; }
  echo "dist: $out/$name.tar.gz ($(stat -c %s "$out/$name.tar.gz") bytes)"
done
(cd "$out" && sha256sum sms-sender-*.tar.gz > SHA256SUMS && sha256sum -c --quiet SHA256SUMS)
echo "dist: $out/SHA256SUMS"
cat "$out/SHA256SUMS"
