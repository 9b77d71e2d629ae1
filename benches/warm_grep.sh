#!/usr/bin/env bash
# The second `grep -r`: every target is mounted once and read twice (the first, cold read fills
# the kernel's caches), then `grep -r` is timed REPS times per target, the targets taken in a
# rotating order in each round so load drifts hit them alike. Reports, per target, the median
# wall time and the median of each round's ratio to the native grep of the same round, grep's
# own CPU (user + system: the kernel's work for a cached read happens in the reader's system
# time, so it is the number that stays meaningful on a shared machine), and for veilfs the
# mount process's CPU over all the timed runs (zero when the kernel asks it nothing).
#
# Usage: benches/warm_grep.sh [--files N] [--reps R] [--veilfs BIN] [--base BIN] [--keep]
#   --files N     files in the generated tree (default 20000; the tree of cold_grep.sh)
#   --reps R      timed rounds (default 15)
#   --veilfs BIN  the binary to mount with (default: target/release/veilfs, built if missing)
#   --base BIN    also mount this binary (default profile), e.g. a copy of an earlier build
#   --keep        keep the generated tree (it is reused by the next run with the same N)
#
# Targets: native, veilfs with the default profile, veilfs without redaction (`rule_sets = []`),
# the --base binary, fuse-overlayfs and bindfs (each skipped when not installed).
# Needs root or a user that may mount through fusermount3.
set -euo pipefail

FILES=20000
REPS=15
VEILFS=""
BASE=""
KEEP=0
RARE_WORD="quuxplotzer"

log() { printf '[warm_grep] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

while (($#)); do
	case $1 in
	--files) FILES=${2:?}; shift ;;
	--reps) REPS=${2:?}; shift ;;
	--veilfs) VEILFS=$(realpath "${2:?}"); shift ;;
	--base) BASE=$(realpath "${2:?}"); shift ;;
	--keep) KEEP=1 ;;
	-h | --help)
		sed -n '10,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
	shift
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$REPO/benches/grep_tree.sh"
[[ -n $VEILFS ]] || VEILFS=$(grep_tree_veilfs "$REPO")
[[ -x $VEILFS ]] || die "no veilfs binary at $VEILFS"

TREE="/tmp/veilfs-cold-grep-$FILES"
WORK=$(mktemp -d /tmp/veilfs-warm-grep.XXXXXX)
declare -A PID_OF=()
MOUNTS=()
cleanup() {
	set +e
	local mp pid
	for mp in "${MOUNTS[@]}"; do
		umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null
	done
	for pid in "${PID_OF[@]}"; do
		wait "$pid" 2>/dev/null
	done
	findmnt -rno TARGET | grep -qF "$WORK/" || rm -rf --one-file-system "$WORK"
	((KEEP)) || rm -rf "$TREE"
}
trap cleanup EXIT

grep_tree_make "$REPO" "$TREE" "$FILES" "$RARE_WORD"

printf 'version = 1\nname = "bench-noredact"\n\n[redaction]\nrule_sets = []\n' >"$WORK/noredact.toml"

# mount_veilfs NAME BIN [PROFILE]: a fresh mount with an empty store at $WORK/mnt/NAME.
mount_veilfs() {
	local name=$1 bin=$2 mp="$WORK/mnt/$1" i args=()
	[[ -n ${3:-} ]] && args=(--profile "$3")
	mkdir -p "$mp" "$WORK/data-$name"
	XDG_DATA_HOME="$WORK/data-$name" "$bin" mount "${args[@]}" "$TREE" "$mp" >"$WORK/$name.out" 2>"$WORK/$name.err" &
	PID_OF[$name]=$!
	for ((i = 0; i < 300; i++)); do
		grep -qs '^veilfs: mounted' "$WORK/$name.out" && findmnt -rno TARGET "$mp" >/dev/null && break
		kill -0 "${PID_OF[$name]}" 2>/dev/null || { cat "$WORK/$name.err" >&2; die "veilfs ($name) exited before mounting"; }
		sleep 0.1
	done
	MOUNTS+=("$mp")
}

TARGETS=("native=$TREE")
mount_veilfs veilfs "$VEILFS"
TARGETS+=("veilfs=$WORK/mnt/veilfs")
mount_veilfs veilfs-noredact "$VEILFS" "$WORK/noredact.toml"
TARGETS+=("veilfs-noredact=$WORK/mnt/veilfs-noredact")
if [[ -n $BASE ]]; then
	mount_veilfs veilfs-base "$BASE"
	TARGETS+=("veilfs-base=$WORK/mnt/veilfs-base")
fi
if command -v fuse-overlayfs >/dev/null; then
	mkdir -p "$WORK/mnt/fuse-overlayfs" "$WORK/ovl-upper" "$WORK/ovl-work"
	fuse-overlayfs -o "lowerdir=$TREE,upperdir=$WORK/ovl-upper,workdir=$WORK/ovl-work" "$WORK/mnt/fuse-overlayfs"
	MOUNTS+=("$WORK/mnt/fuse-overlayfs")
	TARGETS+=("fuse-overlayfs=$WORK/mnt/fuse-overlayfs")
fi
if command -v bindfs >/dev/null; then
	mkdir -p "$WORK/mnt/bindfs"
	bindfs "$TREE" "$WORK/mnt/bindfs"
	MOUNTS+=("$WORK/mnt/bindfs")
	TARGETS+=("bindfs=$WORK/mnt/bindfs")
fi

# The first (cold) and a second read of every target: from here on the kernel holds what it keeps.
for t in "${TARGETS[@]}"; do
	grep -r "$RARE_WORD" "${t#*=}" >/dev/null || true
	grep -r "$RARE_WORD" "${t#*=}" >/dev/null || true
done

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
declare -A T0=()
for name in "${!PID_OF[@]}"; do T0[$name]=$(cpu_ticks "${PID_OF[$name]}"); done
load0=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$RARE_WORD" "$REPS" "${TARGETS[@]}" >"$WORK/table" <<'PY'
import resource, statistics, subprocess, sys, time
word, reps, targets = sys.argv[1], int(sys.argv[2]), [a.split("=", 1) for a in sys.argv[3:]]
wall = {l: [] for l, _ in targets}
cpu = {l: [] for l, _ in targets}
ratio = {l: [] for l, _ in targets}
cpu_ratio = {l: [] for l, _ in targets}
for r in range(reps):
    k = r % len(targets)
    this = {}
    for label, path in targets[k:] + targets[:k]:
        r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(["grep", "-r", word, path], stdout=subprocess.DEVNULL)
        t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        c = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        s = r1.ru_stime - r0.ru_stime
        this[label] = (t1 - t0, c, s)
    n = this["native"]
    for label, v in this.items():
        wall[label].append(v[0])
        cpu[label].append((v[1], v[2]))
        ratio[label].append(v[0] / n[0])
        cpu_ratio[label].append(v[1] / n[1] if n[1] else float("nan"))
med = statistics.median
print("| target | second grep, wall (s) | ratio to native (median of rounds) | grep CPU (s, user + sys) | CPU ratio |")
print("| --- | --- | --- | --- | --- |")
for label, _ in targets:
    c = med(x for x, _ in cpu[label])
    s = med(y for _, y in cpu[label])
    print(f"| {label} | {med(wall[label]):.4f} | {med(ratio[label]):.3f}x | {c:.4f} ({c - s:.4f} + {s:.4f}) | {med(cpu_ratio[label]):.3f}x |")
PY
cat "$WORK/table"
printf '\nmount CPU over the %d timed runs of each veilfs target (ticks of %s s):' "$REPS" "$(awk -v t="$(getconf CLK_TCK)" 'BEGIN { print 1 / t }')"
for name in "${!PID_OF[@]}"; do
	printf ' %s %d;' "$name" "$(($(cpu_ticks "${PID_OF[$name]}") - T0[$name]))"
done
printf '\n%d files; %d rounds; veilfs %s; load before %s, after %s\n' "$FILES" "$REPS" \
	"$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')" "$load0" "$(cut -d' ' -f1-3 /proc/loadavg)"
