#!/usr/bin/env bash
# `make image`: the sms-sender OCI image from the static binary, with no container daemon.
#
#   scripts/image.sh [BINARY] [OUT_DIR]
#       BINARY   default target/x86_64-unknown-linux-musl/release/sms-sender
#       OUT_DIR  default target/image
#
# It builds the final stage of Dockerfile.distroless itself (its text, from the last FROM to the
# end, with `COPY --from=build /rootfs/ /` pointed at a local rootfs/), so the image and the
# Dockerfile cannot drift; scripts/check-image-matches-dockerfile.sh checks the result.
#
#   OUT_DIR/context/   rootfs/ (deploy/image/rootfs.sh: binary, CA bundle, passwd, group) and the
#                      generated Containerfile
#   OUT_DIR/oci/       OCI image layout, tag sms-sender:latest (skopeo/podman/crane can push it:
#                      skopeo copy oci:OUT_DIR/oci:sms-sender:latest docker://REGISTRY/...)
#   OUT_DIR/bundle/    the image unpacked by umoci: an OCI runtime bundle (rootfs/ + config.json)
#   OUT_DIR/storage/, OUT_DIR/run/   buildah's private storage (vfs driver), not the machine's
#
# buildah runs with --isolation chroot (no OCI runtime is needed: FROM scratch has no RUN steps),
# the vfs storage driver (works inside containers and CI, where overlay often does not) and
# --timestamp 0 (SOURCE_DATE_EPOCH if set): the same binary gives the same image digest.
# Re-runnable: every run starts from an empty OUT_DIR/{context,storage,run,oci,bundle}.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
binary=${1:-target/x86_64-unknown-linux-musl/release/sms-sender}
out=${2:-target/image}
dockerfile="$repo/Dockerfile.distroless"
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
tag=sms-sender:latest

die() { echo "image: $*" >&2; exit 1; }

# --- tools ---------------------------------------------------------------------------------
missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
[ -x /usr/bin/python3 ] || missing+=(python3)
[ -f "$ca_bundle" ] || missing+=(ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then
  "$repo/scripts/apt-install.sh" image "${missing[@]}"
fi

# --- inputs --------------------------------------------------------------------------------
[ -f "$binary" ] || die "$binary: no such file (run make build first)"
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
# The image's architecture comes from the binary's ELF header (e_machine).
case "$(od -An -tx1 -j18 -N2 "$binary" | tr -d ' \n')" in
  3e00) arch=amd64 ;;
  b700) arch=arm64 ;;
  *) die "$binary: not an x86_64 or aarch64 ELF executable" ;;
esac

mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/context" "$out/storage" "$out/run" "$out/oci" "$out/bundle"
mkdir -p "$out/context"

# --- root filesystem and Containerfile -----------------------------------------------------
sh "$repo/deploy/image/rootfs.sh" "$binary" "$ca_bundle" "$out/context/rootfs"

# The final stage: from the last FROM line to the end of the file.
last_from=$(grep -n -i -E '^[[:space:]]*FROM[[:space:]]' "$dockerfile" | tail -n 1 | cut -d: -f1)
[ -n "$last_from" ] || die "no FROM in $dockerfile"
tail -n +"$last_from" "$dockerfile" > "$out/context/Containerfile.stage"
copies=$(grep -c -E '^[[:space:]]*COPY[[:space:]]+--from=build[[:space:]]+/rootfs/[[:space:]]+/[[:space:]]*$' \
  "$out/context/Containerfile.stage" || true)
[ "$copies" = 1 ] \
  || die "the final stage of $dockerfile must have exactly one 'COPY --from=build /rootfs/ /' (found $copies)"
sed -E 's#^([[:space:]]*)COPY[[:space:]]+--from=build[[:space:]]+/rootfs/[[:space:]]+/[[:space:]]*$#\1COPY rootfs/ /#' \
  "$out/context/Containerfile.stage" > "$out/context/Containerfile"
rm "$out/context/Containerfile.stage"
if grep -q -E -i '^[[:space:]]*(COPY|ADD)[[:space:]]+--from' "$out/context/Containerfile"; then
  die "the final stage of $dockerfile copies from another stage besides /rootfs/"
fi

# --- build, export, unpack -----------------------------------------------------------------
bah=(buildah --root "$out/storage" --runroot "$out/run" --storage-driver vfs)
"${bah[@]}" build --quiet --isolation chroot --arch "$arch" --os linux \
  --timestamp "${SOURCE_DATE_EPOCH:-0}" --layers=false \
  -f "$out/context/Containerfile" -t "$tag" "$out/context" >/dev/null
"${bah[@]}" push --quiet "$tag" "oci:$out/oci:$tag"
# The image is in OUT_DIR/oci now; buildah's copy is not needed any more.
"${bah[@]}" rmi --all --force >/dev/null 2>&1 || true
rm -rf "$out/storage" "$out/run"

if [ "$(id -u)" = 0 ]; then
  umoci unpack --image "$out/oci:$tag" "$out/bundle" >/dev/null
else
  umoci unpack --rootless --image "$out/oci:$tag" "$out/bundle" >/dev/null
fi

# --- report --------------------------------------------------------------------------------
digest=$(skopeo inspect --format '{{.Digest}}' "oci:$out/oci:$tag")
read -r compressed uncompressed < <(/usr/bin/python3 - "$out/oci" "$digest" <<'EOF'
import gzip, json, os, sys
layout, digest = sys.argv[1], sys.argv[2]
blob = lambda d: os.path.join(layout, "blobs", *d.split(":", 1))
manifest = json.load(open(blob(digest)))
compressed = uncompressed = 0
for layer in manifest["layers"]:
    compressed += layer["size"]
    with gzip.open(blob(layer["digest"])) as f:  # the layer tar, as the image's users unpack it
        while chunk := f.read(1 << 20):
            uncompressed += len(chunk)
print(compressed, uncompressed)
EOF
)
files=$(find "$out/context/rootfs" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
rel=${out#"$PWD"/}
echo "image: $tag ($arch) $digest"
echo "image: $(mib "$uncompressed") uncompressed ($uncompressed bytes of layer tar; files $files bytes)," \
  "$(mib "$compressed") compressed ($compressed bytes of gzip layer) (OCI layout $rel/oci, bundle $rel/bundle)"
