#!/usr/bin/env bash
# Counts the fsync-class syscalls (fsync, fdatasync, syncfs) a snapshot mount makes for small
# versions of write_path.sh's workloads (100 edits, untar 2,000 files, git add+commit and rm -rf
# of 500 files, every file distinct): a measure of the write path's durability cost that, unlike
# wall-clock ratios, does not move with the machine's load.
# Usage: sudo [APPLY=deferred] benches/write_fsyncs.sh VEILFS_BINARY   (needs strace)
set -uo pipefail
BIN=${1:?usage: write_fsyncs.sh VEILFS_BINARY}
W=$(mktemp -d /tmp/veilfs-fsyncs.XXXXXX)
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
[write]
apply = "${APPLY:-immediate}"
[redaction]
rule_sets = []
[breaker]
max_deletes = 0
max_renames = 0
max_overwritten_bytes = 0
P
for wl in edit untar git rm; do
  rm -rf "$W/data" "$W/store" "$W/mp"; cp -a "$W/base" "$W/data"; mkdir -p "$W/mp"
  "$BIN" mount --mode snapshot --store "$W/store" --profile "$W/p.toml" "$W/data" "$W/mp" > "$W/out" 2>"$W/err" &
  pid=$!
  timeout 30 sh -c "until grep -q mounted '$W/out'; do sleep 0.05; done"
  strace -f -c -e trace=fsync,fdatasync,syncfs -o "$W/strace.$wl" $(for t in /proc/$pid/task/*; do echo -p ${t##*/}; done) &
  spid=$!
  sleep 1
  case $wl in
  edit) find "$W/mp/edit" -name '*.c' -print0 | xargs -0 -n 200 sh -c 'for f; do printf "// e\n" >> "$f"; done' sh ;;
  untar) mkdir "$W/mp/un" && tar xf "$W/tree.tar" -C "$W/mp/un" ;;
  git) git -C "$W/mp/git" add -A && git -C "$W/mp/git" commit -qm x ;;
  rm) rm -rf "$W/mp/rm" ;;
  esac
  kill -INT $spid; wait $spid 2>/dev/null || true
  sleep 0.5; umount "$W/mp" || umount -l "$W/mp"; wait $pid || true
  printf '%s: ' "$wl"; awk '$NF ~ /^(fsync|fdatasync|syncfs)$/ {printf "%s %s  ", $NF, $4}' "$W/strace.$wl"; echo
done
rm -rf "$W"
