#!/usr/bin/env bash
# Counts the fsync-class syscalls (fsync, fdatasync, syncfs) a snapshot mount makes for small
# versions of write_path.sh's workloads (100 edits, untar 2,000 files, git add+commit and rm -rf
# of 500 files, every file distinct): a measure of the write path's durability cost that, unlike
# wall-clock ratios, does not move with the machine's load.
# The time per call (strace -c) shows what each one costs on this disk.
# Usage: sudo [APPLY=deferred] benches/write_fsyncs.sh VEILFS_BINARY   (needs strace)
set -uo pipefail
BIN=${1:?usage: write_fsyncs.sh VEILFS_BINARY}
W=$(mktemp -d /tmp/veilfs-fsyncs.XXXXXX)
. "$(dirname "$0")/write_workloads.sh"
workloads_make "$W"
for wl in edit untar git rm; do
  workloads_mount "$W" "$BIN" snapshot
  # shellcheck disable=SC2086
  strace -f -c -e trace=fsync,fdatasync,syncfs -o "$W/strace.$wl" $WL_TASKS &
  spid=$!
  sleep 1
  workloads_run "$W" "$wl"
  kill -INT $spid; wait $spid 2>/dev/null || true
  workloads_unmount "$W"
  printf '%s: ' "$wl"; awk '$NF ~ /^(fsync|fdatasync|syncfs)$/ {printf "%s %s (%s us each)  ", $NF, $4, $3}' "$W/strace.$wl"; echo
done
rm -rf "$W"
