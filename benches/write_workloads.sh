# Sourced by write_fsyncs.sh and write_requests.sh: the small write workloads both count.
# 100 edits, untar of 2,000 files, git add+commit and rm -rf of 500 files, every file distinct.

# workloads_make W: writes W/base (the folder each run copies), W/tree.tar and W/p.toml (no
# redaction, breaker off, `[write] apply` from $APPLY, default immediate; `[cache] write_ttl_ms`
# from $WRITE_TTL_MS, default the profile default).
workloads_make() {
	local w=$1
	python3 - "$w" <<'PY'
import os, sys
w = sys.argv[1]
for top, n in (("edit", 100), ("rm", 500), ("git", 500), ("tarsrc", 2000)):
    for i in range(n):
        d = os.path.join(w, "base", top, f"d{i // 100:03d}")
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, f"f{i:05d}.c"), "w").write(f"int x{i};\n" * 20)
PY
	tar cf "$w/tree.tar" -C "$w/base/tarsrc" . && rm -rf "$w/base/tarsrc"
	git -C "$w/base/git" init -q && git -C "$w/base/git" config user.email b@e.invalid &&
		git -C "$w/base/git" config user.name b
	cat > "$w/p.toml" <<P
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
	if [ -n "${WRITE_TTL_MS:-}" ]; then printf '[cache]\nwrite_ttl_ms = %s\n' "$WRITE_TTL_MS" >> "$w/p.toml"; fi
}

# workloads_files WORKLOAD: how many files it touches.
workloads_files() {
	case $1 in edit) echo 100 ;; untar) echo 2000 ;; git | rm) echo 500 ;; esac
}

# workloads_run W WORKLOAD: runs one workload in the mount at W/mp.
workloads_run() {
	local w=$1
	case $2 in
	edit) find "$w/mp/edit" -name '*.c' -print0 | xargs -0 -n 200 sh -c 'for f; do printf "// e\n" >> "$f"; done' sh ;;
	untar) mkdir "$w/mp/un" && tar xf "$w/tree.tar" -C "$w/mp/un" ;;
	git) git -C "$w/mp/git" add -A && git -C "$w/mp/git" commit -qm x ;;
	rm) rm -rf "$w/mp/rm" ;;
	esac
}

# workloads_mount W BIN MODE: mounts a fresh copy of W/base at W/mp (store W/store, log W/err;
# RUST_LOG passes through) and sets WL_PID to the mount's pid and WL_TASKS to `-p TID` for each
# of its threads, for strace.
workloads_mount() {
	local w=$1
	rm -rf "$w/data" "$w/store" "$w/mp"; cp -a "$w/base" "$w/data"; mkdir -p "$w/mp"
	"$2" mount --mode "$3" --store "$w/store" --profile "$w/p.toml" "$w/data" "$w/mp" > "$w/out" 2> "$w/err" &
	WL_PID=$!
	timeout 30 sh -c "until grep -q mounted '$w/out'; do sleep 0.05; done"
	WL_TASKS=$(for t in /proc/$WL_PID/task/*; do echo -p "${t##*/}"; done)
}

# workloads_unmount W: unmounts W/mp and waits for the mount to exit.
workloads_unmount() {
	sleep 0.3; umount "$1/mp" || umount -l "$1/mp"; wait "$WL_PID" || true
}
