#!/usr/bin/env bash
# The image `make image` built must be what Dockerfile.distroless's final stage describes.
#
#   scripts/check-image-matches-dockerfile.sh [OUT_DIR]      (default target/image; run make image first)
#
# Compares:
#   - the final stage of Dockerfile.distroless (FROM scratch, one COPY --from=build /rootfs/ /,
#     ENV, USER, EXPOSE, ENTRYPOINT; any other instruction fails the check until it is taught here)
#     with the image's config in OUT_DIR/oci (tag sms-sender:latest): Env (PATH aside, which
#     buildah and BuildKit both add to a FROM-scratch image; Dockerfile ENV order), User,
#     Entrypoint, Cmd, WorkingDir, ExposedPorts;
#   - the image's layers with the file list the image must have, exactly: / dirs etc, etc/ssl,
#     etc/ssl/certs (0755), sms-sender (0755), etc/passwd, etc/group,
#     etc/ssl/certs/ca-certificates.crt (0644), all owned 0:0, with the contents of
#     deploy/image/passwd and group and of OUT_DIR/context/rootfs;
#   - /etc/passwd and /etc/group: the USER's uid and gid exist;
#   - OUT_DIR/bundle (umoci's runtime bundle): process user/args/cwd, and rootfs/ holding the
#     same files with the same modes and owners as the layers.
# Prints a diff and exits 1 on any difference.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-target/image}
[ -f "$out/oci/index.json" ] || { echo "check-image: no OCI layout in $out/oci (run make image first)" >&2; exit 1; }

exec /usr/bin/python3 - "$repo" "$out" <<'EOF'
import difflib, gzip, hashlib, json, os, shlex, stat, sys, tarfile

repo, out = sys.argv[1], sys.argv[2]
dockerfile = os.path.join(repo, "Dockerfile.distroless")
tag = "sms-sender:latest"
problems = []

def problem(what, expected, actual):
    if isinstance(expected, list) and isinstance(actual, list):
        diff = "\n".join(difflib.unified_diff(
            [str(x) for x in expected], [str(x) for x in actual],
            "expected (" + what + ")", "image", lineterm=""))
    else:
        diff = f"  expected: {expected!r}\n  image:    {actual!r}"
    problems.append(f"{what} differs:\n{diff}")

# --- the Dockerfile's final stage ----------------------------------------------------------
instructions, pending = [], ""
for raw in open(dockerfile, encoding="utf-8"):
    line = raw.rstrip("\n")
    if not pending and (not line.strip() or line.lstrip().startswith("#")):
        continue
    if pending and line.lstrip().startswith("#"):      # comments inside a continued instruction
        continue
    if line.rstrip().endswith("\\"):
        pending += line.rstrip()[:-1] + " "
        continue
    instructions.append((pending + line).strip())
    pending = ""
last_from = max(i for i, ins in enumerate(instructions) if ins.split()[0].upper() == "FROM")
stage = instructions[last_from:]

want = {"Env": [], "User": None, "Entrypoint": None, "Cmd": None, "WorkingDir": None,
        "ExposedPorts": {}}
for ins in stage:
    keyword, _, rest = ins.partition(" ")
    keyword, rest = keyword.upper(), rest.strip()
    if keyword == "FROM":
        if rest.split()[0] != "scratch":
            problems.append(f"final stage is FROM {rest}, expected FROM scratch (the image is only rootfs.sh's files)")
    elif keyword == "COPY":
        if rest.split() != ["--from=build", "/rootfs/", "/"]:
            problems.append(f"final stage has 'COPY {rest}', expected only 'COPY --from=build /rootfs/ /'")
    elif keyword == "ENV":
        words = shlex.split(rest)
        if words and "=" not in words[0]:               # legacy form: ENV KEY value with spaces
            pairs = [(words[0], rest.split(None, 1)[1] if len(words) > 1 else "")]
        else:
            pairs = [tuple(w.split("=", 1)) for w in words]
        for key, value in pairs:
            want["Env"] = [e for e in want["Env"] if not e.startswith(key + "=")] + [f"{key}={value}"]
    elif keyword == "USER":
        want["User"] = rest
    elif keyword == "EXPOSE":
        for port in rest.split():
            want["ExposedPorts"][port if "/" in port else port + "/tcp"] = {}
    elif keyword in ("ENTRYPOINT", "CMD"):
        try:
            value = json.loads(rest)
        except ValueError:
            problems.append(f"{keyword} {rest}: use the exec form, JSON (the image has no shell)")
            continue
        want["Entrypoint" if keyword == "ENTRYPOINT" else "Cmd"] = value
        if keyword == "ENTRYPOINT":
            want["Cmd"] = None                          # a later ENTRYPOINT resets CMD
    elif keyword == "WORKDIR":
        want["WorkingDir"] = rest
    else:
        problems.append(f"final stage instruction '{ins}' is not understood by scripts/check-image-matches-dockerfile.sh: teach it")

# --- the image -----------------------------------------------------------------------------
layout = os.path.join(out, "oci")
blob = lambda d: os.path.join(layout, "blobs", *d.split(":", 1))
index = json.load(open(os.path.join(layout, "index.json")))
refs = [m for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") in (tag, "latest")]
if not refs:
    sys.exit(f"check-image: no {tag} in {layout}/index.json")
manifest = json.load(open(blob(refs[0]["digest"])))
config = json.load(open(blob(manifest["config"]["digest"])))
cfg = config.get("config", {})

env = cfg.get("Env") or []
added = [e for e in env if e.startswith("PATH=") and not any(w.startswith("PATH=") for w in want["Env"])]
if env and [e for e in env if e not in added] != want["Env"]:
    problem("Env (PATH aside)", want["Env"], [e for e in env if e not in added])
elif not env and want["Env"]:
    problem("Env", want["Env"], env)
for key in ("User", "Entrypoint", "Cmd", "WorkingDir"):
    actual = cfg.get(key) or None
    if actual != want[key]:
        problem(key, want[key], actual)
if (cfg.get("ExposedPorts") or {}) != want["ExposedPorts"]:
    problem("ExposedPorts", sorted(want["ExposedPorts"]), sorted(cfg.get("ExposedPorts") or {}))

# --- the image's files ---------------------------------------------------------------------
rootfs_src = os.path.join(out, "context", "rootfs")
def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]
expected_files = [
    ("etc", "dir", 0o755, None),
    ("etc/group", "file", 0o644, sha(os.path.join(repo, "deploy/image/group"))),
    ("etc/passwd", "file", 0o644, sha(os.path.join(repo, "deploy/image/passwd"))),
    ("etc/ssl", "dir", 0o755, None),
    ("etc/ssl/certs", "dir", 0o755, None),
    ("etc/ssl/certs/ca-certificates.crt", "file", 0o644,
     sha(os.path.join(rootfs_src, "etc/ssl/certs/ca-certificates.crt"))),
    ("sms-sender", "file", 0o755, sha(os.path.join(rootfs_src, "sms-sender"))),
]
fmt = lambda path, kind, mode, digest, owner="0:0": f"/{path} {kind} {mode:04o} {owner} {digest or '-'}"
expected = [fmt(*f) for f in expected_files]

layer_files, contents = {}, {}
for layer in manifest["layers"]:
    with gzip.open(blob(layer["digest"])) as g, tarfile.open(fileobj=g, mode="r|") as tar:
        for m in tar:
            path = m.name.rstrip("/")
            path = path[2:] if path.startswith("./") else path.lstrip("/")
            if not path:
                continue
            kind = "dir" if m.isdir() else "file" if m.isfile() else "symlink" if m.issym() else "other"
            digest = None
            if m.isfile():
                digest = hashlib.sha256(tar.extractfile(m).read()).hexdigest()[:16]
            layer_files[path] = fmt(path, kind, m.mode & 0o7777, digest, f"{m.uid}:{m.gid}")
actual = [layer_files[p] for p in sorted(layer_files)]
if actual != expected:
    problem("image files (path type mode owner sha256)", expected, actual)

# The USER's uid and gid must exist in the image's passwd and group (deploy/image/*).
user = (want["User"] or "").split(":")
passwd = [l.split(":") for l in open(os.path.join(repo, "deploy/image/passwd")).read().splitlines() if l]
group = [l.split(":") for l in open(os.path.join(repo, "deploy/image/group")).read().splitlines() if l]
if not any(p[2] == user[0] for p in passwd):
    problems.append(f"/etc/passwd has no uid {user[0]} (USER {want['User']})")
if len(user) > 1 and not any(g[2] == user[1] for g in group):
    problems.append(f"/etc/group has no gid {user[1]} (USER {want['User']})")
if not any(p[2] == "1001" and p[3] == "1001" for p in passwd):
    problems.append("/etc/passwd has no user with uid 1001, gid 1001")

# --- the runtime bundle umoci unpacked -----------------------------------------------------
bundle = os.path.join(out, "bundle")
if os.path.isfile(os.path.join(bundle, "config.json")):
    proc = json.load(open(os.path.join(bundle, "config.json")))["process"]
    uid, _, gid = (want["User"] or "0").partition(":")
    bundle_user = f'{proc["user"].get("uid")}:{proc["user"].get("gid")}'
    if bundle_user != f"{int(uid)}:{int(gid or 0)}":
        problem("bundle process.user (uid:gid)", f"{int(uid)}:{int(gid or 0)}", bundle_user)
    args = (want["Entrypoint"] or []) + (want["Cmd"] or [])
    if proc.get("args") != args:
        problem("bundle process.args", args, proc.get("args"))
    if proc.get("cwd") != (want["WorkingDir"] or "/"):
        problem("bundle process.cwd", want["WorkingDir"] or "/", proc.get("cwd"))
    root = os.path.join(bundle, "rootfs")
    unpacked = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
            digest = sha(full) if kind == "file" else None
            unpacked.append(fmt(os.path.relpath(full, root), kind, stat.S_IMODE(st.st_mode), digest,
                                f"{st.st_uid}:{st.st_gid}"))
    if os.geteuid() == 0 and sorted(unpacked) != actual:
        problem("bundle rootfs vs image layers", actual, sorted(unpacked))
else:
    problems.append(f"no runtime bundle at {bundle}/config.json")

if problems:
    print("check-image: the image does not match Dockerfile.distroless's final stage:", file=sys.stderr)
    for p in problems:
        print("- " + p, file=sys.stderr)
    sys.exit(1)
print(f"check-image: {out}/oci {tag} matches Dockerfile.distroless's final stage: "
      f"User {want['User']}, Entrypoint {want['Entrypoint']}, Env {want['Env']}"
      + (f" (+ {', '.join(added)} from the builder)" if added else "")
      + f", ExposedPorts {sorted(want['ExposedPorts'])}, {len(expected)} paths owned 0:0")
EOF
