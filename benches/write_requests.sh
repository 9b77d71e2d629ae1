#!/usr/bin/env bash
# Counts, per workload, the FUSE requests a write-mode mount receives (by opcode, from fuser's
# debug log) and the syscalls its threads make (strace -c, in a second run without the log):
# what a write costs in round trips and in work behind each, which unlike wall-clock ratios
# does not move with the machine's load. The workloads are write_fsyncs.sh's: 100 edits,
# untar of 2,000 files, git add+commit and rm -rf of 500 files, every file distinct.
# Usage: sudo benches/write_requests.sh VEILFS_BINARY [MODE...]   (modes: snapshot overlay; needs strace)
#   WRITE_TTL_MS=N (environment) sets `[cache] write_ttl_ms` (unset: the profile default).
#   WORKLOADS="untar git" (environment) runs only those workloads (default: edit untar git rm).
set -uo pipefail
BIN=${1:?usage: write_requests.sh VEILFS_BINARY [MODE...]}
shift
MODES=("${@:-snapshot}")
W=$(mktemp -d /tmp/veilfs-requests.XXXXXX)
trap 'rm -rf "$W"' EXIT
. "$(dirname "$0")/write_workloads.sh"
workloads_make "$W"
# run MODE WORKLOAD LOGSPEC: mounts a fresh copy, runs the workload under strace, unmounts.
run() {
	local mode=$1 wl=$2
	RUST_LOG=$3 workloads_mount "$W" "$BIN" "$mode"
	# shellcheck disable=SC2086
	strace -f -c -o "$W/strace" $WL_TASKS 2>/dev/null &
	local spid=$!
	sleep 1
	L0=$(wc -l < "$W/err")
	workloads_run "$W" "$wl"
	L1=$(wc -l < "$W/err")
	kill -INT $spid; wait $spid 2>/dev/null
	workloads_unmount "$W"
}
for mode in "${MODES[@]}"; do
	for wl in ${WORKLOADS:-edit untar git rm}; do
		n=$(workloads_files "$wl")
		run "$mode" "$wl" warn,fuser=debug
		reqs=$(sed -n "$((L0 + 1)),${L1}p" "$W/err" | grep -o 'FUSE([ 0-9]*) ino 0x[0-9a-f]* [A-Z_]*' | awk '{print $NF}' |
			sort | uniq -c | sort -rn | awk -v n="$n" '{s += $1; o = o sprintf("%s %s, ", $2, $1)} END {printf "%.1f per file (%s)", s / n, o}')
		run "$mode" "$wl" warn
		sys=$(awk -v n="$n" '$NF == "total" {printf "%.1f per file", $4 / n}' "$W/strace")
		top=$(awk '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {print $4, $NF}' "$W/strace" | sort -rn | head -6 | awk '{printf "%s %s, ", $2, $1}')
		printf '%s %s: requests %s\n%s %s: syscalls %s (%s...)\n' "$mode" "$wl" "$reqs" "$mode" "$wl" "$sys" "$top"
	done
done
