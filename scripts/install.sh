#!/bin/sh
# Install sms-sender for systemd: scripts/install.sh BINARY [PREFIX] [DESTDIR]
#
#   BINARY   the built binary (e.g. target/x86_64-unknown-linux-musl/release/sms-sender)
#   PREFIX   where it will live on the target host, default /usr/local
#   DESTDIR  staging root prepended to every path written (packaging, tests), default empty
#
# Installs exactly three files, and nothing else (no /etc, no systemctl):
#   $DESTDIR$PREFIX/bin/sms-sender                              0755
#   $DESTDIR$PREFIX/lib/systemd/system/sms-sender.service       0644  (ExecStart=$PREFIX/bin/sms-sender)
#   $DESTDIR$PREFIX/share/sms-sender/sms-sender.env.example     0644
# `make install PREFIX=… DESTDIR=…` calls it.
set -eu

die() { echo "install.sh: $*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 3 ] || die "usage: scripts/install.sh BINARY [PREFIX] [DESTDIR]"
binary=$1
prefix=${2:-/usr/local}
destdir=${3:-}

here=$(cd "$(dirname "$0")/.." && pwd)
unit_src=$here/deploy/systemd/sms-sender.service
env_src=$here/deploy/systemd/sms-sender.env.example

[ -f "$binary" ] || die "binary not found: $binary (build it first: make build)"
[ -x "$binary" ] || die "binary is not executable: $binary"
[ -f "$unit_src" ] || die "missing $unit_src"
[ -f "$env_src" ] || die "missing $env_src"

# PREFIX ends up verbatim in ExecStart=: absolute, and nothing systemd or sed would read specially.
case $prefix in
    /*) ;;
    *) die "PREFIX must be an absolute path, got '$prefix'" ;;
esac
case $prefix in
    *[!A-Za-z0-9/._+-]*) die "PREFIX may only contain letters, digits and / . _ + -, got '$prefix'" ;;
esac
while [ "$prefix" != / ] && [ "${prefix%/}" != "$prefix" ]; do prefix=${prefix%/}; done
[ "$prefix" = / ] && prefix=
case $destdir in
    ''|/*) ;;
    *) die "DESTDIR must be empty or an absolute path, got '$destdir'" ;;
esac

bin_dst=$destdir$prefix/bin/sms-sender
unit_dst=$destdir$prefix/lib/systemd/system/sms-sender.service
env_dst=$destdir$prefix/share/sms-sender/sms-sender.env.example

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT INT TERM
# The unit is written for PREFIX=/usr/local: ExecStart= and the paths in its header comment.
sed "s|/usr/local/|$prefix/|g" "$unit_src" > "$tmp"
grep -qx "ExecStart=$prefix/bin/sms-sender" "$tmp" ||
    die "could not rewrite ExecStart= in $unit_src (expected ExecStart=/usr/local/bin/sms-sender)"

install -d -m 0755 "$destdir$prefix/bin" "$destdir$prefix/lib/systemd/system" \
    "$destdir$prefix/share/sms-sender"
install -m 0755 "$binary" "$bin_dst"
install -m 0644 "$tmp" "$unit_dst"
install -m 0644 "$env_src" "$env_dst"

echo "installed:"
echo "  $bin_dst (0755)"
echo "  $unit_dst (0644, ExecStart=$prefix/bin/sms-sender)"
echo "  $env_dst (0644)"
if [ -n "$destdir" ]; then
    echo "(staged under DESTDIR=$destdir; the next steps apply on the target host)"
fi
cat <<NEXT
next steps (as root):
  install -d -m 0700 /etc/sms-sender
  install -m 0600 -o root -g root $prefix/share/sms-sender/sms-sender.env.example /etc/sms-sender/sms-sender.env
  \$EDITOR /etc/sms-sender/sms-sender.env    # SUPABASE_URL, SUPABASE_SERVICE_KEY, TWILIO_*
  systemctl daemon-reload && systemctl enable --now sms-sender
  journalctl -u sms-sender -f
NEXT
