#!/usr/bin/env bash
# Counts, per workload, the FUSE requests a write-mode mount receives (by opcode, from fuser's
# debug log) and the syscalls its threads make (strace -c, in a second run without the log):
# what a write costs in round trips and in work behind each, which unlike wall-clock ratios
# does not move with the machine's load. The workloads are write_fsyncs.sh's: 100 edits,
# untar of 2,000 files, git add+commit and rm -rf of 500 files, every file distinct.
# Usage: sudo benches/write_requests.sh VEILFS_BINARY [MODE...]   (modes: snapshot overlay; needs strace)
#   WRITE_TTL_MS=N (environment) sets `[cache] write_ttl_ms` (unset: the profile default).
set -uo pipefail
BIN=${1:?usage: write_requests.sh VEILFS_BINARY [MODE...]}
shift
MODES=("${@:-snapshot}")
W=$(mktemp -d /tmp/veilfs-requests.XXXXXX)
trap 'rm -rf "$W"' EXIT
python3 - "$W" <<'PY'
import os, sys
w = sys.argv[1]
for top, n in (("edit", 100), ("rm", 500), ("git", 500), ("tarsrc", 2000)):
    for i in range(n):
        d = os.path.join(w, "base", top, f"d{i // 100:03d}")
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, f"f{i:05d}.c"), "w").write(f"int x{i};\n" * 20)
PY
tar cf "$W/tree.tar" -C "$W/base/tarsrc" . && rm -rf "$W/base/tarsrc"
git -C "$W/base/git" init -q && git -C "$W/base/git" config user.email b@e.invalid && git -C "$W/base/git" config user.name b
cat > "$W/p.toml" <<P
version = 1
name = "count"
[redaction]
rule_sets = []
[breaker]
max_deletes = 0
max_renames = 0
max_overwritten_bytes = 0
P
if [ -n "${WRITE_TTL_MS:-}" ]; then printf '[cache]\nwrite_ttl_ms = %s\n' "$WRITE_TTL_MS" >> "$W/p.toml"; fi
declare -A FILES=([edit]=100 [untar]=2000 [git]=500 [rm]=500)
# run MODE WORKLOAD LOGSPEC: mounts a fresh copy, runs the workload under strace, unmounts.
run() {
	local mode=$1 wl=$2
	rm -rf "$W/data" "$W/store" "$W/mp"; cp -a "$W/base" "$W/data"; mkdir -p "$W/mp"
	RUST_LOG=$3 "$BIN" mount --mode "$mode" --store "$W/store" --profile "$W/p.toml" "$W/data" "$W/mp" > "$W/out" 2> "$W/err" &
	local pid=$!
	timeout 30 sh -c "until grep -q mounted '$W/out'; do sleep 0.05; done"
	strace -f -c -o "$W/strace" $(for t in /proc/$pid/task/*; do echo -p ${t##*/}; done) 2>/dev/null &
	local spid=$!
	sleep 1
	L0=$(wc -l < "$W/err")
	case $wl in
	edit) find "$W/mp/edit" -name '*.c' -print0 | xargs -0 -n 200 sh -c 'for f; do printf "// e\n" >> "$f"; done' sh ;;
	untar) mkdir "$W/mp/un" && tar xf "$W/tree.tar" -C "$W/mp/un" ;;
	git) git -C "$W/mp/git" add -A && git -C "$W/mp/git" commit -qm x ;;
	rm) rm -rf "$W/mp/rm" ;;
	esac
	L1=$(wc -l < "$W/err")
	kill -INT $spid; wait $spid 2>/dev/null
	sleep 0.3; umount "$W/mp" || umount -l "$W/mp"; wait $pid
}
for mode in "${MODES[@]}"; do
	for wl in edit untar git rm; do
		n=${FILES[$wl]}
		run "$mode" "$wl" warn,fuser=debug
		reqs=$(sed -n "$((L0 + 1)),${L1}p" "$W/err" | grep -o 'FUSE([ 0-9]*) ino 0x[0-9a-f]* [A-Z_]*' | awk '{print $NF}' |
			sort | uniq -c | sort -rn | awk -v n="$n" '{s += $1; o = o sprintf("%s %s, ", $2, $1)} END {printf "%.1f per file (%s)", s / n, o}')
		run "$mode" "$wl" warn
		sys=$(awk -v n="$n" '$NF == "total" {printf "%.1f per file", $4 / n}' "$W/strace")
		top=$(awk '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {print $4, $NF}' "$W/strace" | sort -rn | head -6 | awk '{printf "%s %s, ", $2, $1}')
		printf '%s %s: requests %s\n%s %s: syscalls %s (%s...)\n' "$mode" "$wl" "$reqs" "$mode" "$wl" "$sys" "$top"
	done
done
