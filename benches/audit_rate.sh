#!/usr/bin/env bash
# How many audit events per second the audit path sustains while `grep -r` reads a 50k-file tree
# through a snapshot-mode mount (every open is one OCSF line, chained; snapshot mode has no kernel
# caching of entries, so every file costs LOOKUP + OPEN + READ + RELEASE through veilfs).
#
# There is no switch that turns the audit trail off, so this reports, for the same tree and the
# same `grep -r`: the native wall time, the mount's wall time (and its ratio to native), the audit
# lines written during the grep, events per second of grep wall time, and the CPU time the mount
# process spent (user+system, from /proc/PID/stat) with the CPU per event.
#
# Usage: benches/audit_rate.sh [--files N] [--runs R] [--bin PATH]
#   --files N  files in the tree (default 50000, in directories of 100)
#   --runs R   greps per measurement, the median is reported (default 3)
#   --bin P    the veilfs binary (default target/release/veilfs, else target/debug/veilfs)
# Needs root (/dev/fuse) and python3. Not a test: it times things.
set -euo pipefail
. "$(dirname "$0")/mount_wait.sh"

FILES=50000
RUNS=3
BIN=""
while [ $# -gt 0 ]; do
	case "$1" in
	--files) FILES="$2"; shift 2 ;;
	--runs) RUNS="$2"; shift 2 ;;
	--bin) BIN="$2"; shift 2 ;;
	*) echo "unknown argument $1" >&2; exit 2 ;;
	esac
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "$BIN" ]; then
	for b in "${CARGO_TARGET_DIR:-$ROOT/target}/release/veilfs" "${CARGO_TARGET_DIR:-$ROOT/target}/debug/veilfs"; do
		if [ -x "$b" ]; then BIN="$b"; break; fi
	done
fi
[ -x "$BIN" ] || { echo "no veilfs binary: cargo build --release" >&2; exit 1; }

WORK="$(mktemp -d /tmp/veilfs-audit-bench-XXXXXX)"
SCOPE="$WORK/scope" MP="$WORK/mp" STORE="$WORK/store"
mkdir -p "$SCOPE" "$MP"
MOUNT_PID=""
cleanup() {
	if mountpoint -q "$MP"; then "$BIN" unmount "$MP" 2>/dev/null || umount -l "$MP"; fi
	if [ -n "$MOUNT_PID" ]; then wait "$MOUNT_PID" 2>/dev/null || true; fi
	rm -rf "$WORK"
}
trap cleanup EXIT

python3 - "$SCOPE" "$FILES" <<'EOF'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
for i in range(n):
    d = os.path.join(root, f"d{i // 100:04d}")
    if i % 100 == 0:
        os.mkdir(d)
    with open(os.path.join(d, f"f{i % 100:03d}.txt"), "w") as f:
        f.write(" ".join(rnd.choice(words) for _ in range(rnd.randint(20, 200))) + "\n")
EOF
cat > "$WORK/p.toml" <<'EOF'
version = 1
[redaction]
rule_sets = ["secrets"]
[write]
mode = "snapshot"
[breaker]
max_reads_per_minute = 0
EOF

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Wall seconds of one `grep -r` of a word no file holds (so every byte is read).
grep_secs() {
	local s e
	s=$(date +%s.%N)
	grep -r quuxplotzer "$1" >/dev/null || true
	e=$(date +%s.%N)
	echo "$e - $s" | bc -l
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
audit_lines() { cat "$STORE"/audit/*.jsonl 2>/dev/null | wc -l; }

grep -r quuxplotzer "$SCOPE" >/dev/null || true # warm the page cache
NATIVE=$(for _ in $(seq "$RUNS"); do grep_secs "$SCOPE"; done | median)

"$BIN" mount --profile "$WORK/p.toml" --store "$STORE" "$SCOPE" "$MP" >"$WORK/mount.out" 2>"$WORK/mount.err" &
MOUNT_PID=$!
wait_mounted "$WORK/mount.out" "$WORK/mount.err" "$MOUNT_PID" || exit 1
HZ=$(getconf CLK_TCK)
walls=() events=() cpus=()
for _ in $(seq "$RUNS"); do
	l0=$(audit_lines) c0=$(cpu_ticks "$MOUNT_PID")
	w=$(grep_secs "$MP")
	# Allowed opens are flushed at most once a second: wait for the buffer to reach the file.
	sleep 1.2
	l1=$(audit_lines) c1=$(cpu_ticks "$MOUNT_PID")
	walls+=("$w") events+=($((l1 - l0))) cpus+=("$(echo "($c1 - $c0) / $HZ" | bc -l)")
done
VEIL=$(printf '%s\n' "${walls[@]}" | median)
EV=$(printf '%s\n' "${events[@]}" | median)
CPU=$(printf '%s\n' "${cpus[@]}" | median)
printf 'binary:               %s\n' "$BIN"
printf 'files:                %d\n' "$FILES"
printf 'native grep -r:       %.3f s\n' "$NATIVE"
printf 'veilfs grep -r:       %.3f s (%.1fx native)\n' "$VEIL" "$(echo "$VEIL / $NATIVE" | bc -l)"
printf 'audit events per run: %d\n' "$EV"
printf 'events per second:    %.0f\n' "$(echo "$EV / $VEIL" | bc -l)"
printf 'mount CPU per run:    %.3f s (%.1f us per event)\n' "$CPU" "$(echo "$CPU * 1000000 / $EV" | bc -l)"
