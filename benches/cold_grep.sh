#!/usr/bin/env bash
# The first touch of a tree: one `grep -r` through a fresh veilfs mount (empty store, so an empty
# scan cache) over a warm page cache, against the same grep on the real folder. Reports wall time,
# its ratio to native, the mount process's CPU per file (user + system from /proc/PID/stat around
# the grep: the number that stays meaningful when other work shares the machine) and the second
# grep of the same mount (served from the kernel's caches; benches/warm_grep.sh times that one
# over many rounds). Then, on another fresh mount, the first `find` of the tree (listings only),
# against native `find`, with the mount's CPU per entry.
#
# Usage: benches/cold_grep.sh [--files N] [--runs R] [--profile FILE] [--veilfs BIN] [--keep]
#   --files N     files in the generated tree (default 20000; 100 per directory, 1-4 KiB each)
#   --runs R      fresh mounts (default 3); native is timed 2R times
#   --profile F   a profile for the mount (default: the built-in default profile)
#   --veilfs BIN  the binary to mount with (default: target/release/veilfs, built if missing)
#   --keep        keep the generated tree (it is reused by the next run with the same N)
#
# Needs root or a user that may mount through fusermount3. The tree goes to
# /tmp/veilfs-cold-grep-N; every mount's store to a temp dir that is deleted.
set -euo pipefail

FILES=20000
RUNS=3
PROFILE=""
VEILFS=""
KEEP=0
RARE_WORD="quuxplotzer"

log() { printf '[cold_grep] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

while (($#)); do
	case $1 in
	--files) FILES=${2:?}; shift ;;
	--runs) RUNS=${2:?}; shift ;;
	--profile) PROFILE=$(realpath "${2:?}"); shift ;;
	--veilfs) VEILFS=$(realpath "${2:?}"); shift ;;
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
WORK=$(mktemp -d /tmp/veilfs-cold-grep.XXXXXX)
MP="$WORK/mnt"
PID=""
cleanup() {
	set +e
	[[ -n $PID ]] && unmount_and_wait
	findmnt -rno TARGET | grep -qF "$WORK/" || rm -rf --one-file-system "$WORK"
	((KEEP)) || rm -rf "$TREE"
}
trap cleanup EXIT

grep_tree_make "$REPO" "$TREE" "$FILES" "$RARE_WORD"

now() { date +%s.%N; }
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

timed_grep() {
	local s e
	s=$(now)
	grep -r "$RARE_WORD" "$1" >/dev/null || true
	e=$(now)
	awk -v s="$s" -v e="$e" 'BEGIN { printf "%.4f", e - s }'
}

native=()
for ((i = 0; i < 2 * RUNS; i++)); do native+=("$(timed_grep "$TREE")"); done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
NATIVE=$(median "${native[@]}")

# Unmounts the mount of $PID and waits for the process. An unmount can fail with EBUSY for a
# moment after the last reader went away; retried, then detached lazily, and the wait bounded.
unmount_and_wait() {
	local i
	for ((i = 0; i < 20; i++)); do
		umount "$MP" 2>>"$WORK/umount.err" && break
		sleep 0.25
	done
	findmnt -rno TARGET "$MP" >/dev/null && { log "unmount failed: $(tail -1 "$WORK/umount.err")"; umount -l "$MP"; }
	for ((i = 0; i < 100; i++)); do
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	kill "$PID" 2>/dev/null || true
	wait "$PID" 2>/dev/null || true
	PID=""
}

# Mounts the tree afresh (empty store, so an empty scan cache) at $MP; sets PID.
mount_fresh() {
	local i args=()
	rm -rf "$WORK/data"
	mkdir -p "$WORK/data"
	[[ -n $PROFILE ]] && args=(--profile "$PROFILE")
	XDG_DATA_HOME="$WORK/data" "$VEILFS" mount "${args[@]}" "$TREE" "$MP" >"$WORK/out" 2>"$WORK/err" &
	PID=$!
	for ((i = 0; i < 300; i++)); do
		grep -q '^veilfs: mounted' "$WORK/out" && findmnt -rno TARGET "$MP" >/dev/null && break
		kill -0 "$PID" 2>/dev/null || { cat "$WORK/err" >&2; die "veilfs exited before mounting"; }
		sleep 0.1
	done
	grep -q '^veilfs: mounted' "$WORK/out" || die "veilfs did not mount"
}

timed_find() {
	local s e
	s=$(now)
	find "$1" >/dev/null
	e=$(now)
	awk -v s="$s" -v e="$e" 'BEGIN { printf "%.4f", e - s }'
}
nfind=()
for ((i = 0; i < 2 * RUNS; i++)); do nfind+=("$(timed_find "$TREE")"); done
NATIVE_FIND=$(median "${nfind[@]}")
ENTRIES=$(find "$TREE" | wc -l)

mkdir -p "$MP"
printf '| run | load | cold grep (s) | ratio | mount CPU us/file (user + sys) | second grep (s) | ratio | cold find (s) | ratio | mount CPU us/entry |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
for ((r = 1; r <= RUNS; r++)); do
	mount_fresh
	load=$(cut -d' ' -f1 /proc/loadavg)
	read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/$PID/stat")
	cold=$(timed_grep "$MP")
	read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/$PID/stat")
	warm=$(timed_grep "$MP")
	unmount_and_wait
	# The first find of a fresh mount: listings only (find reads no file), every entry new.
	mount_fresh
	read -r fu0 fs0 < <(awk '{ print $14, $15 }' "/proc/$PID/stat")
	cfind=$(timed_find "$MP")
	read -r fu1 fs1 < <(awk '{ print $14, $15 }' "/proc/$PID/stat")
	unmount_and_wait
	awk -v c="$cold" -v w="$warm" -v n="$NATIVE" -v f="$FILES" -v t="$TCK" -v l="$load" \
		-v u="$((u1 - u0))" -v s="$((s1 - s0))" -v r="$r" -v cf="$cfind" -v nf="$NATIVE_FIND" \
		-v fc="$((fu1 - fu0 + fs1 - fs0))" -v ne="$ENTRIES" 'BEGIN {
		us = 1e6 / t / f
		printf "| %d | %s | %.3f | %.1fx | %.1f (%.1f + %.1f) | %.3f | %.2fx | %.3f | %.1fx | %.1f |\n",
			r, l, c, c / n, (u + s) * us, u * us, s * us, w, w / n, cf, cf / nf, fc * 1e6 / t / ne
	}'
done
printf '\nnative find (median of %d): %.3f s over %d entries\n' "$((2 * RUNS))" "$NATIVE_FIND" "$ENTRIES"
printf '\nnative grep -r (warm, median of %d): %.3f s; %d files; veilfs %s; load at end: %s\n' \
	"$((2 * RUNS))" "$NATIVE" "$FILES" "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')" \
	"$(cut -d' ' -f1-3 /proc/loadavg)"
