#!/usr/bin/env bash
# `make image-multiarch`: one OCI image index (a multi-architecture image) holding the amd64 and
# arm64 images that scripts/image.sh builds from the two static binaries; `docker pull` or Cloud
# Run then pick the one for their platform.
#
#   scripts/image-index.sh OUT_DIR AMD64_BINARY ARM64_BINARY
#
# Each architecture is built into OUT_DIR/ARCH/ (OCI layout, bundle) exactly as `make image`
# builds one; their blobs are gathered into OUT_DIR/oci, under an index whose two entries name
# their platform, tagged sms-sender:latest. skopeo then reads the index back and copies every
# image out of it, which checks that it is well formed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: scripts/image-index.sh OUT_DIR AMD64_BINARY ARM64_BINARY}
amd64=${2:?amd64 binary}
arm64=${3:?arm64 binary}
tag=sms-sender:latest

mkdir -p "$out"
out=$(cd "$out" && pwd)
for pair in "amd64=$amd64" "arm64=$arm64"; do
  arch=${pair%%=*}
  "$repo/scripts/image.sh" "${pair#*=}" "$out/$arch" | sed "s/^image:/image ($arch):/"
done

rm -rf "$out/oci"
/usr/bin/python3 - "$out" "$tag" <<'PY'
import hashlib, json, os, shutil, sys
out, tag = sys.argv[1], sys.argv[2]
dest = os.path.join(out, "oci")
os.makedirs(os.path.join(dest, "blobs", "sha256"))
manifests = []
for arch in ("amd64", "arm64"):
    layout = os.path.join(out, arch, "oci")
    for name in os.listdir(os.path.join(layout, "blobs", "sha256")):
        target = os.path.join(dest, "blobs", "sha256", name)
        if not os.path.exists(target):
            shutil.copyfile(os.path.join(layout, "blobs", "sha256", name), target)
    entry = json.load(open(os.path.join(layout, "index.json")))["manifests"][0]
    entry = {k: entry[k] for k in ("mediaType", "digest", "size")}
    entry["platform"] = {"architecture": arch, "os": "linux"}
    manifests.append(entry)
index = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": manifests,
}, separators=(",", ":")).encode()
digest = "sha256:" + hashlib.sha256(index).hexdigest()
with open(os.path.join(dest, "blobs", "sha256", digest.split(":")[1]), "wb") as f:
    f.write(index)
json.dump({
    "schemaVersion": 2,
    "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": digest,
        "size": len(index),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }],
}, open(os.path.join(dest, "index.json"), "w"))
with open(os.path.join(dest, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
print(f"image index: {tag} {digest} (linux/amd64, linux/arm64) in {dest}")
PY
# Read it back: every image of the index copies out, and each is for the platform it claims.
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
skopeo copy --quiet --all "oci:$out/oci:$tag" "dir:$check/all"
for arch in amd64 arm64; do
  got=$(skopeo inspect --override-arch "$arch" --override-os linux --format '{{.Architecture}}' "oci:$out/oci:$tag")
  [ "$got" = "$arch" ] || { echo "image index: the $arch entry is an image for $got" >&2; exit 1; }
done
echo "image index: read back with skopeo; linux/amd64 and linux/arm64 resolve to their own images"
