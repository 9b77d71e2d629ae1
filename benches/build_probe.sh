#!/usr/bin/env bash
# A build's name probes: a C compiler looks for each `#include "x.h"` in every `-I` directory
# in turn, so most of the names it asks for do not exist. Each probe the kernel does not keep
# is a LOOKUP round trip to the FUSE server; veilfs answers absent names with a negative entry
# the kernel keeps for the TTL (README "Absent names").
#
# Generates N sources that each include 20 of 40 headers found in the last of four include
# directories (three absent names per header), then runs `gcc -fsyntax-only` on every source,
# one process each, natively and through each target, in one run. Per target: a fresh mount,
# then RUNS timed passes (the first after the mount, the rest warm); reports the median of the
# warm passes and the first, each with its ratio to the native median.
#
# Usage: sudo benches/build_probe.sh [--sources N] [--runs R] [--veilfs BIN]
#   --sources N   generated sources (default 200)
#   --runs R      passes per target (default 5; native runs 2R)
#   --veilfs BIN  the binary to mount with (default: target/release/veilfs, built if missing)
# Environment: TARGETS="native veilfs veilfs-snapshot fuse-overlayfs bindfs" (the default).
set -euo pipefail
. "$(dirname "$0")/mount_wait.sh"

SOURCES=200
RUNS=5
VEILFS=""
while [ $# -gt 0 ]; do
	case $1 in
	--sources) SOURCES=$2; shift 2 ;;
	--runs) RUNS=$2; shift 2 ;;
	--veilfs) VEILFS=$2; shift 2 ;;
	*) echo "build_probe.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$VEILFS" ]; then
	VEILFS=$ROOT/target/release/veilfs
	[ -x "$VEILFS" ] || (cd "$ROOT" && cargo build --release --quiet)
fi
for c in gcc fuse-overlayfs bindfs python3; do
	command -v "$c" >/dev/null || { echo "build_probe.sh: needs $c (apt-get install gcc fuse-overlayfs bindfs python3)" >&2; exit 2; }
done
read -r -a TARGETS <<< "${TARGETS:-native veilfs veilfs-snapshot fuse-overlayfs bindfs}"

W=$(mktemp -d /tmp/veilfs-build-probe.XXXXXX)
MP=$W/mp
PID=""
cleanup() {
	if mountpoint -q "$MP" 2>/dev/null; then umount "$MP" 2>/dev/null || umount -l "$MP"; fi
	if [ -n "$PID" ]; then wait "$PID" 2>/dev/null || true; fi
	rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$MP"

python3 - "$W/src" "$SOURCES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in "abcd":
    os.makedirs(os.path.join(root, "inc", d), exist_ok=True)
os.makedirs(os.path.join(root, "c"), exist_ok=True)
for h in range(40):
    open(os.path.join(root, "inc", "d", f"h{h}.h"), "w").write(f"#pragma once\nint f{h}(int);\n")
for c in range(n):
    inc = "".join(f'#include "h{(c + i) % 40}.h"\n' for i in range(20))
    open(os.path.join(root, "c", f"m{c}.c"), "w").write(inc + f"int g{c}(void) {{ return f{c % 40}(1); }}\n")
PY
# Files older than veilfs's 2 s settle rule, as a checked-out project's are.
touch -d '1 hour ago' "$W"/src/c/* "$W"/src/inc/*/*

# One pass over the tree at $1: prints its wall time in seconds.
pass() {
	local s e
	s=$(date +%s.%N)
	(cd "$1/c" && for f in *.c; do gcc -fsyntax-only -I../inc/a -I../inc/b -I../inc/c -I../inc/d "$f"; done)
	e=$(date +%s.%N)
	echo "$e - $s" | bc
}
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# Mounts target $1 at $MP over $W/src.
mount_target() {
	rm -rf "$W/store" "$W/upper" "$W/work" "$W/data" && mkdir -p "$W/upper" "$W/work"
	case $1 in
	veilfs | veilfs-snapshot)
		local args=()
		[ "$1" = veilfs-snapshot ] && args=(--mode snapshot --store "$W/store")
		XDG_DATA_HOME=$W/data "$VEILFS" mount "${args[@]}" "$W/src" "$MP" >"$W/out" 2>"$W/err" &
		PID=$!
		wait_mounted "$W/out" "$W/err" "$PID" || exit 1 ;;
	fuse-overlayfs) fuse-overlayfs -o "lowerdir=$W/src,upperdir=$W/upper,workdir=$W/work" "$MP" 2>/dev/null ;;
	bindfs) bindfs "$W/src" "$MP" ;;
	esac
}
unmount_target() {
	umount "$MP"
	if [ -n "$PID" ]; then
		wait "$PID" || true
		PID=""
	fi
}

declare -A FIRST WARM
native=$(for _ in $(seq $((2 * RUNS))); do pass "$W/src"; done | median)
for t in "${TARGETS[@]}"; do
	[ "$t" = native ] && continue
	mount_target "$t"
	times=()
	for _ in $(seq "$RUNS"); do times+=("$(pass "$MP")"); done
	unmount_target
	FIRST[$t]=${times[0]}
	WARM[$t]=$(printf '%s\n' "${times[@]:1}" | median)
done

ratio() { awk -v a="$1" -v b="$native" 'BEGIN {printf "%.3f (%.2fx)", a, a / b}'; }
echo "gcc -fsyntax-only over $SOURCES sources, 20 includes each, 4 -I directories (headers in the last);"
echo "native median of $((2 * RUNS)): ${native} s; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| target | first pass after mount (s) | warm, median of $((RUNS - 1)) (s) |"
echo "| --- | --- | --- |"
for t in "${TARGETS[@]}"; do
	[ "$t" = native ] && continue
	echo "| $t | $(ratio "${FIRST[$t]}") | $(ratio "${WARM[$t]}") |"
done
