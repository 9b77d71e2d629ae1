#!/usr/bin/env bash
# Write-path comparison: the same six agent-like workloads on the native folder, through veilfs
# in snapshot mode (every pre-image stored and journalled first), veilfs in overlay mode, the
# same two modes mounted by a normal user (through fusermount3; its overlay in a user namespace),
# and fuse-overlayfs; then the time of `veilfs rollback` and `veilfs verify` for the snapshot session.
#
# Usage: sudo benches/write_path.sh [--quick] [--fresh-fs] [--reps N] [--out FILE]
#   --quick   ~10x smaller (100 edits, 100 MiB file, 2k-file tarball, 500-file git commit and rm -rf,
#             4 MiB written in 4 KiB writes)
#   --fresh-fs  every repetition of every cell runs on a newly made ext4 filesystem, folder and
#             store alike (a long-used /tmp made native untar vary 4x between runs: ext4's search
#             for free inodes). Its image is a sparse file in $FS_IMAGE_DIR (default /dev/shm, so
#             a flush costs what ext4's own journal commit costs; a directory on a disk filesystem
#             instead stacks two journals and makes every fsync cost milliseconds, the regime of a
#             slow disk) on a loop device with direct I/O.
# WORKLOADS="edit git" (environment) runs only those workloads; TARGETS="native snapshot" only those targets;
# APPLY=deferred sets the profile's `[write] apply` (default: the profile default, immediate);
# PASS_WRITES=true sets `[write] passthrough_writes` (unset: not written, so older binaries parse the profile).
#   --reps N  repetitions per cell (default 3); the median is reported
#   --out F   also write the markdown table to F
#
# Write workloads change their data, so each repetition starts from a fresh copy of the data
# and a fresh mount (hyperfine's repeated runs would measure a different thing each time).
# Figures are seconds (median) and the ratio to native from the same run.
set -euo pipefail

QUICK=0
FRESH=0
REPS=3
OUT=""
while (($#)); do
	case $1 in
	--quick) QUICK=1 ;;
	--fresh-fs) FRESH=1 ;;
	--reps) REPS=${2:?}; shift ;;
	--out) OUT=${2:?}; shift ;;
	*) echo "unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }
for c in fuse-overlayfs python3 bc git mkfs.ext4; do
	command -v "$c" >/dev/null ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse-overlayfs python3 bc git e2fsprogs >/dev/null
done
repo=$(cd "$(dirname "$0")/.." && pwd)
# VEILFS_BIN=path measures that binary instead (a build of an older commit, for a before/after).
if [ -n "${VEILFS_BIN:-}" ]; then
	VEILFS=$VEILFS_BIN
else
	(cd "$repo" && cargo build --release --quiet)
	VEILFS="${CARGO_TARGET_DIR:-$repo/target}/release/veilfs"
fi

if ((QUICK)); then
	NSMALL=100 BIGMB=100 NTAR=2000 NTREE=500 NWRITES=1024 FS_SIZE=2G
else
	NSMALL=1000 BIGMB=1024 NTAR=20000 NTREE=5000 NWRITES=4096 FS_SIZE=8G
fi

WORK=$(mktemp -d /tmp/veilfs-wbench.XXXXXX)
# The normal user of the "user" columns: its own copy of the binary, /dev/fuse as distributions
# ship it (0666), and a work tree it can reach.
BENCH_USER=veilfs-bench
id "$BENCH_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$BENCH_USER"
chmod 0666 /dev/fuse
chmod 0755 "$WORK"
cp "$VEILFS" "$WORK/veilfs"
chmod 0755 "$WORK/veilfs"
MOUNTS=()
PIDS=()
DIR=""
LOOP="" FS_IMAGE=""
# From the mount table: root cannot stat a normal user's FUSE mount (no allow_other), which
# `mountpoint` needs.
is_mounted() { findmnt -rn --mountpoint "$1" >/dev/null; }
cleanup() {
	set +e
	for m in "${MOUNTS[@]}"; do is_mounted "$m" && umount -l "$m"; done
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	is_mounted "$WORK/run" && umount -l "$WORK/run"
	[ -z "$LOOP" ] || losetup -d "$LOOP"
	[ -z "$FS_IMAGE" ] || rm -f "$FS_IMAGE"
	rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '[write_path] %s\n' "$*" >&2; }

# Base data: small source files, one big file, a tarball of a source tree.
log "generating data in $WORK"
mkdir -p "$WORK/base/src" "$WORK/tarsrc"
python3 - "$WORK" "$NSMALL" "$NTAR" "$NTREE" <<'EOF'
import os, sys, random
work, nsmall, ntar, ntree = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
random.seed(7)
words = "fn let mut self impl struct match return where trait pub use mod crate".split()
def text(n):
    return "".join(" ".join(random.choice(words) for _ in range(8)) + "\n" for _ in range(n))
for i in range(nsmall):
    d = os.path.join(work, "base/src", f"m{i // 100:02d}")
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, f"f{i:04d}.rs"), "w").write(text(40))
for i in range(ntar):
    d = os.path.join(work, "tarsrc", f"d{i // 250:03d}")
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, f"f{i:05d}.c"), "w").write(text(20))
# A source tree to commit with git (its repository initialised, nothing added) and one to delete.
for top in ("git", "rm"):
    for i in range(ntree):
        d = os.path.join(work, "trees", top, f"d{i // 100:03d}")
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, f"f{i:05d}.c"), "w").write(text(20))
EOF
git -C "$WORK/trees/git" init -q
git -C "$WORK/trees/git" config user.email bench@example.invalid
git -C "$WORK/trees/git" config user.name bench
# Each workload's data lives apart, so a repetition copies only what it needs.
mkdir -p "$WORK/bigbase"
head -c "$((BIGMB << 20))" /dev/urandom > "$WORK/bigbase/big.bin"
tar cf "$WORK/tree.tar" -C "$WORK/tarsrc" .

cat > "$WORK/profile.toml" <<EOF
version = 1
name = "bench-write"
[redaction]
rule_sets = []
[write]
snapshot_max_size = "2 GiB"
apply = "${APPLY:-immediate}"
${PASS_WRITES:+passthrough_writes = $PASS_WRITES}
# The workloads delete and rewrite thousands of files on purpose.
[breaker]
max_deletes = 0
max_renames = 0
max_overwritten_bytes = 0
EOF

# The workloads, run inside the directory given as $1.
wl_edit() { find "$1/src" -name '*.rs' -print0 | xargs -0 -n 200 sh -c 'for f; do printf "// edited\n" >> "$f"; done' sh; }
wl_big() { dd if=/dev/zero of="$1/big.bin" bs=1M count="$BIGMB" conv=notrunc status=none; }
wl_untar() { mkdir "$1/unpacked" && tar xf "$WORK/tree.tar" -C "$1/unpacked"; }
wl_git() { git -C "$1/git" add -A && git -C "$1/git" commit -qm bench; }
wl_rm() { rm -rf "$1/rm"; }
# A compiler's or linker's output: one new file in many small writes.
wl_writes() { dd if=/dev/zero of="$1/out.o" bs=4k count="$NWRITES" status=none; }
# The data each workload starts from.
declare -A WL_DATA=([edit]=base [big]=bigbase [untar]=base [git]=trees [rm]=trees [writes]=base)

now() { date +%s.%N; }

# Unmounts whatever the last setup mounted and waits for veilfs to exit (it then unmounts its
# private overlay too).
teardown() {
	for m in "${MOUNTS[@]}"; do is_mounted "$m" && umount "$m"; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	MOUNTS=() PIDS=()
}

# fresh_fs DIR: a newly made ext4 filesystem mounted at DIR (the same sparse image, remade).
# Made with lazy inode-table init and mounted with `noinit_itable`, so no background zeroing
# runs during a measurement; direct I/O on the loop device, so its data is not cached twice.
fresh_fs() {
	is_mounted "$1" && umount "$1"
	[ -n "$LOOP" ] || {
		FS_IMAGE=$(mktemp "${FS_IMAGE_DIR:-/dev/shm}/veilfs-wbench.XXXXXX.img")
		truncate -s "$FS_SIZE" "$FS_IMAGE"
		LOOP=$(losetup --find --show --direct-io=on "$FS_IMAGE")
	}
	mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$LOOP"
	mkdir -p "$1"
	mount -o noinit_itable "$LOOP" "$1"
	chmod 0755 "$1"
}

# Prepares a fresh copy of the data $2 and mounts target $1 over it; sets DIR to work in.
# (Not called in a subshell: it records the mounts to tear down.)
setup() {
	local t=$1 r=$WORK/run
	teardown
	if ((FRESH)); then
		fresh_fs "$r"
	else
		rm -rf "$r"
	fi
	mkdir -p "$r/mp" "$r/upper" "$r/work"
	cp -a "$WORK/$2" "$r/data"
	sync
	case $t in
	native) DIR=$r/data ;;
	snapshot-user | overlay-user)
		chown -R "$BENCH_USER:$(id -gn "$BENCH_USER")" "$r"
		runuser -u "$BENCH_USER" -- "$WORK/veilfs" mount --mode "${t%-user}" --store "$r/store" \
			--profile "$WORK/profile.toml" "$r/data" "$r/mp" > "$r/out" 2> "$r/err" &
		PIDS+=($!)
		MOUNTS+=("$r/mp")
		timeout 30 sh -c "until grep -qs mounted '$r/out'; do read -t 0.05 x < /dev/zero 2>/dev/null || true; done"
		DIR=$r/mp
		;;
	snapshot | overlay)
		"$VEILFS" mount --mode "$t" --store "$r/store" --profile "$WORK/profile.toml" \
			"$r/data" "$r/mp" > "$r/out" 2> "$r/err" &
		PIDS+=($!)
		MOUNTS+=("$r/mp")
		# The mount prints its line once the kernel handshake is done.
		timeout 30 sh -c "until grep -qs mounted '$r/out'; do read -t 0.05 x < /dev/zero 2>/dev/null || true; done"
		DIR=$r/mp
		;;
	fuse-overlayfs)
		fuse-overlayfs -o "lowerdir=$r/data,upperdir=$r/upper,workdir=$r/work" "$r/mp"
		MOUNTS+=("$r/mp")
		DIR=$r/mp
		;;
	esac
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A RES
TARGETS=(${TARGETS:-native snapshot overlay snapshot-user overlay-user fuse-overlayfs})
WLS=(${WORKLOADS:-edit big untar git rm writes})
declare -A WL_TITLE=([edit]="edit $NSMALL small files once" [big]="rewrite one $BIGMB MiB file" [untar]="untar $NTAR files"
	[git]="git add -A && git commit, $NTREE files" [rm]="rm -rf $NTREE files"
	[writes]="write $((NWRITES * 4)) KiB in 4 KiB writes")
ROLLBACK=() VERIFY=()
for wl in "${WLS[@]}"; do
	for t in "${TARGETS[@]}"; do
		times=()
		for _ in $(seq "$REPS"); do
			setup "$t" "${WL_DATA[$wl]}"
			if [[ $t == *-user ]]; then
				# A normal user's mount is not open to root (no allow_other).
				s=$(now)
				runuser -u "$BENCH_USER" -- env WORK="$WORK" BIGMB="$BIGMB" NWRITES="$NWRITES" bash -c "$(declare -f "wl_$wl"); wl_$wl '$DIR'"
				sync
				e=$(now)
			else
				s=$(now); "wl_$wl" "$DIR"; sync; e=$(now)
			fi
			times+=("$(echo "$e - $s" | bc -l)")
			if [ "$t" = snapshot ]; then
				teardown
				s=$(now); "$VEILFS" verify --store "$WORK/run/store" > /dev/null; e=$(now)
				VERIFY+=("$wl $(echo "$e - $s" | bc -l)")
				s=$(now); "$VEILFS" rollback --store "$WORK/run/store" > /dev/null; e=$(now)
				ROLLBACK+=("$wl $(echo "$e - $s" | bc -l)")
			fi
		done
		RES[$wl,$t]=$(printf '%s\n' "${times[@]}" | median)
		log "$wl on $t: ${RES[$wl,$t]} s"
	done
done

{
	OTHERS=()
	for t in "${TARGETS[@]}"; do [ "$t" = native ] || OTHERS+=("$t"); done
	head="| workload | native (s) |" sep="| --- | --- |"
	for t in "${OTHERS[@]}"; do head+=" $t |" sep+=" --- |"; done
	echo "$head"
	echo "$sep"
	for wl in "${WLS[@]}"; do
		n=${RES[$wl,native]}
		row="| ${WL_TITLE[$wl]} | $(printf '%.3f' "$n")"
		for t in "${OTHERS[@]}"; do
			v=${RES[$wl,$t]}
			row+=" | $(printf '%.3f (%.2fx)' "$v" "$(echo "$v / $n" | bc -l)")"
		done
		echo "$row |"
	done
	[ ${#VERIFY[@]} -gt 0 ] || exit 0
	echo
	echo "snapshot session, after each workload (median over reps):"
	for wl in "${WLS[@]}"; do
		v=$(printf '%s\n' "${VERIFY[@]}" | awk -v w="$wl" '$1==w {print $2}' | median)
		r=$(printf '%s\n' "${ROLLBACK[@]}" | awk -v w="$wl" '$1==w {print $2}' | median)
		printf -- '- %s: verify %.3f s, rollback %.3f s\n' "${WL_TITLE[$wl]}" "$v" "$r"
	done
} | tee "${OUT:-/dev/null}"
