#!/usr/bin/env bash
# Check the systemd unit as installed: scripts/check-systemd-unit.sh BINARY   (make systemd-check)
#
# 1. scripts/install.sh BINARY /usr/local into a temporary DESTDIR;
# 2. `systemd-analyze verify` must say nothing about the unit. verify checks that ExecStart's
#    binary exists, and `--root=DESTDIR` cannot be used on systemd 252 (the root then lacks
#    sysinit.target & co.), so it checks a copy of the installed unit whose ExecStart= points at
#    the DESTDIR binary (the only difference, asserted);
# 3. `systemd-analyze security --offline=yes` on the installed unit: overall exposure <= 2.0;
# 4. the settings the service relies on: Type=notify, Restart=always, MemoryMax=, 10 s <=
#    TimeoutStopSec <= 30 s (8 s drain + 1.5 s hand-over, src/service.rs), NoNewPrivileges=yes,
#    DynamicUser=yes or a non-root User=, RestrictAddressFamilies= an allow list without
#    AF_NETLINK or AF_PACKET.
# Needs systemd-analyze (systemd >= 250 for --offline): installed with apt-get when missing and
# run as root, otherwise the script says what to install. Exits nonzero on any failure.
set -euo pipefail

MAX_EXPOSURE=2.0
PREFIX=/usr/local

die() { echo "check-systemd-unit: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: scripts/check-systemd-unit.sh BINARY"
binary=$1
[ -x "$binary" ] || die "binary not found or not executable: $binary (build it first: make build)"
here=$(cd "$(dirname "$0")/.." && pwd)

# --- systemd-analyze -------------------------------------------------------------------------
if ! command -v systemd-analyze >/dev/null 2>&1; then
    "$here/scripts/apt-install.sh" systemd-check systemd
fi
command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze still not found after installing systemd"
sd_version=$(systemd-analyze --version | awk 'NR==1 {print $2}')
[ "${sd_version%%[!0-9]*}" -ge 250 ] 2>/dev/null ||
    die "systemd $sd_version is too old: 'systemd-analyze security --offline=yes' needs systemd >= 250"

# --- install into a temporary DESTDIR ----------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
destdir=$tmp/root
"$here/scripts/install.sh" "$binary" "$PREFIX" "$destdir" >/dev/null ||
    die "scripts/install.sh $binary $PREFIX $destdir failed"
unit=$destdir$PREFIX/lib/systemd/system/sms-sender.service
[ -f "$unit" ] || die "install.sh did not install $unit"
echo "installed into $destdir (PREFIX=$PREFIX), systemd $sd_version"

failures=()
fail() { failures+=("$*"); echo "  ✗ $*"; }
pass() { echo "  ✓ $*"; }

# --- systemd-analyze verify --------------------------------------------------------------------
echo "systemd-analyze verify:"
mkdir "$tmp/verify"
vunit=$tmp/verify/sms-sender.service
sed "s|^ExecStart=$PREFIX/bin/sms-sender\$|ExecStart=$destdir$PREFIX/bin/sms-sender|" "$unit" > "$vunit"
if [ "$(diff "$unit" "$vunit" | grep -c '^[<>]')" != 2 ]; then
    fail "could not point the verify copy's ExecStart= at $destdir$PREFIX/bin/sms-sender"
fi
set +e
verify_out=$(systemd-analyze verify --man=no "$vunit" 2>&1)
verify_rc=$?
set -e
about_unit=$(printf '%s\n' "$verify_out" | grep -e 'sms-sender' -e "$tmp" || true)
other=$(printf '%s\n' "$verify_out" | grep -v -e 'sms-sender' -e "$tmp" -e '^$' || true)
[ -z "$other" ] || printf '  (about other units, ignored)\n%s\n' "$(sed 's/^/    /' <<<"$other")"
if [ -n "$about_unit" ]; then
    fail "systemd-analyze verify reports on the unit:"
    sed 's/^/      /' <<<"$about_unit"
elif [ "$verify_rc" != 0 ]; then
    fail "systemd-analyze verify exited with $verify_rc"
else
    pass "verify: no warnings (ExecStart=$destdir$PREFIX/bin/sms-sender)"
fi

# --- systemd-analyze security --offline=yes ------------------------------------------------------
echo "systemd-analyze security --offline=yes:"
set +e
security_out=$(systemd-analyze security --offline=yes --no-pager "$unit" 2>&1)
set -e
overall=$(grep 'Overall exposure level' <<<"$security_out" || true)
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9]*\.[0-9]\).*/\1/p' <<<"$overall")
if [ -z "$score" ]; then
    fail "no overall exposure level in the output of systemd-analyze security:"
    sed 's/^/      /' <<<"$security_out"
else
    echo "  $overall"
    if awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s + 0 <= m + 0) }'; then
        pass "exposure $score <= $MAX_EXPOSURE"
    else
        fail "exposure $score > $MAX_EXPOSURE (systemd-analyze security --offline=yes)"
        echo "    still exposed:"
        grep '✗' <<<"$security_out" | sed 's/^/      /' || true
    fi
fi

# --- settings the service relies on ------------------------------------------------------------
echo "settings:"
# Every value of KEY in [Service], in order (comments and other sections skipped).
values() {
    awk -v key="$1" '
        /^[ \t]*[#;]/ { next }
        /^[ \t]*\[/ { section = $0; gsub(/[ \t]/, "", section); next }
        section == "[Service]" {
            i = index($0, "="); if (i == 0) next
            k = substr($0, 1, i - 1); gsub(/[ \t]/, "", k)
            if (k != key) next
            v = substr($0, i + 1); sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v); print v
        }' "$unit"
}
# The effective value of a single-valued KEY: the last assignment.
value() { values "$1" | tail -n 1; }
is_true() { case ${1,,} in yes|true|on|1) return 0 ;; *) return 1 ;; esac; }
# A systemd time span ("15s", "1min 30s", "15000ms", "15") in milliseconds; fails on "infinity".
span_ms() {
    awk -v t="$1" 'BEGIN {
        total = 0; s = t; gsub(/ /, "", s); if (s == "") exit 1
        while (s != "") {
            if (!match(s, /^[0-9]+(\.[0-9]+)?/)) exit 1
            n = substr(s, 1, RLENGTH); s = substr(s, RLENGTH + 1)
            match(s, /^[a-z]*/); u = substr(s, 1, RLENGTH); s = substr(s, RLENGTH + 1)
            if (u == "" || u ~ /^(s|sec|second|seconds)$/) f = 1000
            else if (u ~ /^(ms|msec)$/) f = 1
            else if (u ~ /^(us|usec)$/) f = 0.001
            else if (u ~ /^(m|min|minute|minutes)$/) f = 60000
            else if (u ~ /^(h|hr|hour|hours)$/) f = 3600000
            else exit 1
            total += n * f
        }
        printf "%d\n", total }'
}

v=$(value Type);    [ "$v" = notify ] && pass "Type=notify" || fail "Type=${v:-(unset)}, want notify"
v=$(value Restart); [ "$v" = always ] && pass "Restart=always" || fail "Restart=${v:-(unset)}, want always"
v=$(value MemoryMax)
case ${v,,} in
    ''|infinity) fail "MemoryMax=${v:-(unset)}: set a memory cap" ;;
    *) pass "MemoryMax=$v" ;;
esac
v=$(value TimeoutStopSec); src=TimeoutStopSec
[ -n "$v" ] || { v=$(value TimeoutSec); src=TimeoutSec; }
if [ -z "$v" ]; then
    fail "TimeoutStopSec unset (default 90 s): want 10 s..30 s"
elif ! ms=$(span_ms "$v"); then
    fail "$src=$v: not a finite time span; want 10 s..30 s"
elif [ "$ms" -lt 10000 ] || [ "$ms" -gt 30000 ]; then
    fail "$src=$v: want 10 s..30 s (8 s drain + 1.5 s hand-over, and no more than 30 s)"
else
    pass "$src=$v"
fi
v=$(value NoNewPrivileges)
is_true "$v" && pass "NoNewPrivileges=$v" || fail "NoNewPrivileges=${v:-(unset)}, want yes"
dyn=$(value DynamicUser); user=$(value User)
if is_true "$dyn"; then
    pass "DynamicUser=$dyn"
elif [ -n "$user" ] && [ "$user" != root ] && [ "$user" != 0 ]; then
    pass "User=$user"
else
    fail "neither DynamicUser=yes nor a non-root User= (DynamicUser=${dyn:-unset}, User=${user:-unset})"
fi
# RestrictAddressFamilies= accumulates; an empty assignment resets it.
families=""
while IFS= read -r line; do
    if [ -z "$line" ]; then families=""; else families="$families $line"; fi
done < <(values RestrictAddressFamilies)
families=${families# }
if [ -z "$families" ]; then
    fail "RestrictAddressFamilies unset: want an allow list (AF_INET AF_INET6 AF_UNIX)"
elif [[ $families == ~* || $families == none ]]; then
    fail "RestrictAddressFamilies=$families: want an allow list of families, not a deny list"
elif grep -qwE 'AF_NETLINK|AF_PACKET' <<<"$families"; then
    fail "RestrictAddressFamilies=$families allows AF_NETLINK or AF_PACKET"
else
    pass "RestrictAddressFamilies=$families"
fi
v=$(value ExecStart)
[ "$v" = "$PREFIX/bin/sms-sender" ] && pass "ExecStart=$v" ||
    fail "ExecStart=${v:-(unset)}, want $PREFIX/bin/sms-sender (install.sh rewrites it)"

if [ ${#failures[@]} -gt 0 ]; then
    echo "check-systemd-unit: FAILED (${#failures[@]}):" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "check-systemd-unit: OK (exposure $score <= $MAX_EXPOSURE)"
