#!/bin/sh
# Installs the suite into a temp root, checks the tree and that every unit's ExecStart=
# names an installed binary, then runs `systemd-analyze verify` on the units and fails on
# anything it prints (it exits 0 on unknown keys and bad values). Prints the
# `systemd-analyze security` exposure of each unit.
set -eu
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
make -s install DESTDIR="$root" PREFIX=/usr PROFILE="${PROFILE:-release}" NO_BUILD="${NO_BUILD:-}"

fail=0
for f in usr/bin/sos-lcs usr/bin/acrnd usr/bin/acrnctl \
         usr/lib/systemd/system/sos-lcs.service usr/lib/systemd/system/acrnd.service \
         usr/lib/tmpfiles.d/acrn.conf usr/share/doc/acrn-lifecycle/README.md; do
    if [ ! -e "$root/$f" ]; then echo "missing: /$f"; fail=1; fi
done
for unit in "$root"/usr/lib/systemd/system/*.service; do
    exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
    if [ -z "$exe" ] || [ ! -x "$root$exe" ]; then
        echo "$(basename "$unit"): ExecStart=$exe is not an installed binary"; fail=1
    fi
done
[ "$fail" = 0 ] || exit 1

# The root needs the distribution's own units (sysinit.target, ...) that ours depend on:
# take the host's, as the target system would have them.
mkdir -p "$root/usr/lib/systemd/system"
for d in /usr/lib/systemd/system /lib/systemd/system; do
    [ -d "$d" ] && cp -an "$d/." "$root/usr/lib/systemd/system/" 2>/dev/null || true
done
out=$(systemd-analyze verify --root="$root" \
    "$root"/usr/lib/systemd/system/sos-lcs.service "$root"/usr/lib/systemd/system/acrnd.service 2>&1) || {
    echo "$out"; echo "systemd-analyze verify failed"; exit 1; }
if [ -n "$out" ]; then
    echo "$out"
    echo "systemd-analyze verify printed warnings: treated as failures"
    exit 1
fi
echo "units verified: sos-lcs.service acrnd.service"
for u in sos-lcs.service acrnd.service; do
    systemd-analyze security --offline=yes --root="$root" "$u" 2>/dev/null | tail -n 1 | sed "s/^/$u: /" || true
done
