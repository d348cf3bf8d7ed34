#!/bin/sh
# The one definition of the sms-sender image's files. Used by the build stage of
# Dockerfile.distroless and by scripts/image.sh (`make image`).
#
#   deploy/image/rootfs.sh BINARY CA_BUNDLE DEST
#
# Writes into DEST (created if missing; must not already hold other files):
#   /sms-sender                          0755  the static binary
#   /etc/passwd, /etc/group              0644  root, sms-sender (1001:1001), nobody
#   /etc/ssl/certs/ca-certificates.crt   0644  the CA bundle (SSL_CERT_FILE)
# Directories are 0755. Ownership is left to the image builder (COPY makes it 0:0).
# Plain POSIX sh: it runs on the host and inside the Debian build stage.
set -eu

if [ "$#" -ne 3 ]; then
    echo "usage: $0 BINARY CA_BUNDLE DEST" >&2
    exit 2
fi
binary=$1
ca_bundle=$2
dest=$3
here=$(cd "$(dirname "$0")" && pwd)

for f in "$binary" "$ca_bundle" "$here/passwd" "$here/group"; do
    [ -f "$f" ] || { echo "rootfs.sh: $f: no such file" >&2; exit 1; }
done
[ -s "$ca_bundle" ] || { echo "rootfs.sh: $ca_bundle is empty" >&2; exit 1; }
if [ -d "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
    echo "rootfs.sh: $dest is not empty" >&2
    exit 1
fi

umask 022
mkdir -p "$dest/etc/ssl/certs"
chmod 0755 "$dest" "$dest/etc" "$dest/etc/ssl" "$dest/etc/ssl/certs"
# cat, not cp: follows symlinks (the host's bundle may be one) and drops source modes/xattrs.
cat "$binary" > "$dest/sms-sender"
cat "$here/passwd" > "$dest/etc/passwd"
cat "$here/group" > "$dest/etc/group"
cat "$ca_bundle" > "$dest/etc/ssl/certs/ca-certificates.crt"
chmod 0755 "$dest/sms-sender"
chmod 0644 "$dest/etc/passwd" "$dest/etc/group" "$dest/etc/ssl/certs/ca-certificates.crt"
