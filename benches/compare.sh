#!/usr/bin/env bash
# End-to-end read-path comparison: the same data folder read natively, through veilfs (built-in
# default profile; the same with `no_open = false`, i.e. one OPEN/RELEASE round trip per file; a
# profile without redaction; and the default profile mounted by a normal user, through fusermount3
# and without passthrough), through fuse-overlayfs and through bindfs. Then the first touch of the
# tree (cold: a fresh mount with an empty scan cache over a warm page cache) for find, cat and
# grep -r, and the memory of a default-profile mount over a 100k-file tree (10k with --quick).
#
# Usage: benches/compare.sh [--quick] [--runs N] [--out FILE] [--keep]
#   --quick   ~10x smaller data set and fewer I/Os, for a smoke run
#   --runs N  hyperfine runs per measurement (default 10; --quick 5)
#   --out F   also write the markdown table to F (raw hyperfine JSON goes to F.json.d/)
#   --keep    keep the generated data under /tmp (path is printed) for a manual look afterwards
#
# Every figure is a hyperfine median with a warm page cache, and every FUSE figure is also given as a
# ratio to native measured in the same run: the machine is shared, so absolute numbers drift while
# ratios taken minutes apart stay comparable.
#
# Needs root (/dev/fuse, mount; the normal user `veilfs-bench` is created for its column and
# /dev/fuse made 0666 as distributions ship it). Installs fuse3, fuse-overlayfs, bindfs, hyperfine, jq and python3 when
# they are missing and builds veilfs with `cargo build --release` (honours CARGO_TARGET_DIR).
set -euo pipefail

readonly TARGETS=(native vdef vopen vplain vuser ovl bind)
declare -A TITLE=(
	[native]="native (median s)"
	[vdef]="veilfs default"
	[vopen]="veilfs default, no_open = false"
	[vplain]="veilfs no-redaction"
	[vuser]="veilfs default, normal user"
	[ovl]="fuse-overlayfs"
	[bind]="bindfs"
)
readonly WORKLOADS=(seq find du cat grep rand)
declare -A WL_TITLE=(
	[seq]="seq read 1 file (dd bs=1M)"
	[find]="find tree"
	[du]="du -s tree"
	[cat]="cat small files"
	[grep]="grep -r tree"
	[rand]="random 4 KiB preads (os.pread)"
)
# The cold table: workloads and targets, each run once on a fresh mount, COLD_REPS times.
readonly COLD_WORKLOADS=(find cat grep)
readonly COLD_TARGETS=(vdef vuser ovl bind)
readonly COLD_REPS=3
# The normal user the "normal user" columns mount as.
readonly BENCH_USER=veilfs-bench
# A word that the generator plants in a few files only, so grep has to read everything.
readonly RARE_WORD="quuxplotzer"

QUICK=0
RUNS=""
OUT=""
KEEP=0
WORK=""
# Mount points to detach and daemons to stop on exit, whatever happened before.
MOUNTS=()
PIDS=()
declare -A ROOT=()   # target -> directory the workloads read
declare -A PID_OF=() # veilfs target -> pid of its mount process

log() { printf '[compare] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

usage() {
	sed -n '5,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

parse_args() {
	while (($#)); do
		case $1 in
		--quick) QUICK=1 ;;
		--runs)
			RUNS=${2:?--runs needs a number}
			shift
			;;
		--out)
			OUT=${2:?--out needs a file}
			shift
			;;
		--keep) KEEP=1 ;;
		-h | --help)
			usage
			exit 0
			;;
		*) die "unknown argument: $1 (see --help)" ;;
		esac
		shift
	done
	if [[ -z $RUNS ]]; then
		if ((QUICK)); then RUNS=5; else RUNS=10; fi
	fi
	# Relative --out is relative to where the user stood, not to where we cd later.
	if [[ -n $OUT && $OUT != /* ]]; then OUT="$PWD/$OUT"; fi
}

# Data sizes. Full: 1 GiB file, 500x100 tree (50k files), 110x100 small set (11k files).
set_sizes() {
	if ((QUICK)); then
		BIG_MIB=100 TREE_DIRS=50 SMALL_DIRS=11 RAND_IOS=2000 MEM_DIRS=20
	else
		BIG_MIB=1024 TREE_DIRS=500 SMALL_DIRS=110 RAND_IOS=20000 MEM_DIRS=200
	fi
	FILES_PER_DIR=100
}

cleanup() {
	local rc=$? mp pid
	set +e
	for mp in "${MOUNTS[@]}"; do
		# Lazy: a stuck daemon or a shell still inside must not keep us from detaching.
		umount -l "$mp" 2>/dev/null || fusermount3 -uz "$mp" 2>/dev/null
	done
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	if [[ -n $WORK && -d $WORK ]]; then
		if ((KEEP)); then
			log "kept data in $WORK"
		elif findmnt -rno TARGET | grep -qF "$WORK/"; then
			# Never recurse into a mount that survived: it could be the real data of someone else.
			log "a mount under $WORK survived; not deleting it"
		else
			rm -rf --one-file-system "$WORK"
		fi
	fi
	exit "$rc"
}

# Installs only what `command -v` cannot find, so a prepared machine is not touched.
ensure_tools() {
	local -A pkg_of=([fusermount3]=fuse3 [fuse-overlayfs]=fuse-overlayfs [bindfs]=bindfs
		[hyperfine]=hyperfine [jq]=jq [python3]=python3)
	local cmd missing=()
	for cmd in "${!pkg_of[@]}"; do
		command -v "$cmd" >/dev/null || missing+=("${pkg_of[$cmd]}")
	done
	if ((${#missing[@]})); then
		log "installing: ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
	fi
}

build_veilfs() {
	local repo=$1 target_dir
	log "building veilfs (release)"
	(cd "$repo" && cargo build --release --quiet) >&2
	target_dir=${CARGO_TARGET_DIR:-target}
	# cargo resolves a relative CARGO_TARGET_DIR against the directory it ran in.
	[[ $target_dir == /* ]] || target_dir="$repo/$target_dir"
	VEILFS="$target_dir/release/veilfs"
	[[ -x $VEILFS ]] || die "no binary at $VEILFS after the build"
}

# Source-like text: lines of words, 1-4 KiB per file, deterministic (fixed seed) so two runs read the
# same bytes. No secret-looking strings, so redaction scans everything and masks nothing.
generate_tree() {
	local dir=$1 ndirs=$2 nfiles=$3 seed=$4
	python3 - "$dir" "$ndirs" "$nfiles" "$seed" "$RARE_WORD" <<'PY'
import os, random, sys
root, ndirs, nfiles, seed, rare = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rng = random.Random(seed)
words = ("fn let mut struct impl pub use return match if else for while loop self Some None Ok Err "
         "value index buffer reader writer config path entry result error handle count offset "
         "len size node tree item list map key table cache open close read write flush").split()
for d in range(ndirs):
    sub = os.path.join(root, f"d{d:03d}")
    os.makedirs(sub, exist_ok=True)
    for f in range(nfiles):
        target = rng.randint(1024, 4096)
        lines, size, n = [], 0, 0
        while size < target:
            line = "    " + " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + ";"
            lines.append(line)
            size += len(line) + 1
        # Plant the rare word in one file of every 5000 (always in the first one).
        if (d * nfiles + f) % 5000 == 0:
            lines.insert(len(lines) // 2, f"    // {rare}")
        with open(os.path.join(sub, f"f{f:02d}.rs"), "w") as out:
            out.write("\n".join(lines) + "\n")
PY
}

make_data() {
	DATA="$WORK/data"
	mkdir -p "$DATA/media"
	log "generating data in $DATA (big file ${BIG_MIB} MiB, tree ${TREE_DIRS}x${FILES_PER_DIR}, small ${SMALL_DIRS}x${FILES_PER_DIR})"
	# The big file is named *.mp4 on purpose: it is random bytes (binary) and larger than the default
	# profile's max_scan_size (64 MiB), so under any other name the default profile refuses to open
	# it (unscannable = "deny"). Media files are on its unscannable_allow list and are served raw.
	head -c "$((BIG_MIB << 20))" /dev/urandom >"$DATA/media/big.mp4"
	generate_tree "$DATA/tree" "$TREE_DIRS" "$FILES_PER_DIR" 1
	generate_tree "$DATA/small" "$SMALL_DIRS" "$FILES_PER_DIR" 2
	write_pread_helper
	sync
}

# Random 4 KiB preads with a fixed seed. Not fio: fio spends ~280 ms starting up (more than the 20k
# cached preads themselves), which flattens every ratio towards 1, and its default invalidate=1
# drops the file's page cache before each run, so "native" measured the disk, not the file system.
write_pread_helper() {
	cat >"$WORK/pread.py" <<'PY'
import os, random, sys
path, n = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
blocks = os.fstat(fd).st_size // 4096
rng = random.Random(42)
offsets = [rng.randrange(blocks) * 4096 for _ in range(n)]
for off in offsets:
    if len(os.pread(fd, 4096, off)) != 4096:
        sys.exit(f"short read at {off}")
PY
}

# Starts a veilfs mount in the background and waits for its "mounted" line (the documented signal).
mount_veilfs() {
	local name=$1 mp=$2 pid i
	shift 2
	mkdir -p "$mp"
	# A mount of the same name earlier (the cold runs) left its line here: not this mount's.
	rm -f "$WORK/$name.out"
	if [[ $name == vuser* || $name == cold-vuser ]]; then
		# Its own store (scan cache) under $WORK, a mount point it owns, its own binary copy.
		mkdir -p "$WORK/$name-data"
		chown "$BENCH_USER" "$mp" "$WORK/$name-data"
		runuser -u "$BENCH_USER" -- env XDG_DATA_HOME="$WORK/$name-data" \
			"$WORK/veilfs" mount "$@" "$DATA" "$mp" >"$WORK/$name.out" 2>"$WORK/$name.err" &
	else
		XDG_DATA_HOME="$WORK/$name-data" \
			"$VEILFS" mount "$@" "$DATA" "$mp" >"$WORK/$name.out" 2>"$WORK/$name.err" &
	fi
	pid=$!
	PIDS+=("$pid")
	MOUNTS+=("$mp")
	for ((i = 0; i < 300; i++)); do
		grep -q '^veilfs: mounted' "$WORK/$name.out" && break
		kill -0 "$pid" 2>/dev/null || {
			cat "$WORK/$name.err" >&2
			die "veilfs ($name) exited before mounting"
		}
		sleep 0.1
	done
	grep -q '^veilfs: mounted' "$WORK/$name.out" || die "veilfs ($name) did not mount within 30 s"
	PID_OF[$name]=$pid
	ROOT[$name]=$mp
}

mount_all() {
	local m="$WORK/mnt"
	ROOT[native]=$DATA
	# Same profile as the default minus redaction, so the difference between the two veilfs
	# columns is the price of scanning and masking.
	cat >"$WORK/bench-plain.toml" <<'TOML'
version = 1
name = "bench-plain"

[redaction]
rule_sets = []
TOML
	mount_veilfs vdef "$m/vdef"
	# The default profile with the kernel asking veilfs at every open and close.
	sed 's/^no_open = true$/no_open = false/' "$REPO/profiles/default.toml" >"$WORK/bench-open.toml"
	grep -q '^no_open = false$' "$WORK/bench-open.toml" || die "profiles/default.toml has no 'no_open = true' line"
	mount_veilfs vopen "$m/vopen" --profile "$WORK/bench-open.toml"
	mount_veilfs vplain "$m/vplain" --profile "$WORK/bench-plain.toml"
	mount_veilfs vuser "$m/vuser"

	mkdir -p "$m/ovl" "$WORK/ovl-upper" "$WORK/ovl-work"
	MOUNTS+=("$m/ovl")
	fuse-overlayfs -o "lowerdir=$DATA,upperdir=$WORK/ovl-upper,workdir=$WORK/ovl-work" "$m/ovl"
	ROOT[ovl]=$m/ovl

	mkdir -p "$m/bind"
	MOUNTS+=("$m/bind")
	bindfs "$DATA" "$m/bind"
	ROOT[bind]=$m/bind
}

# Every target must show the same tree and let us read the big file, or its numbers mean nothing.
check_views() {
	local t want got
	want=$(find "$DATA" | wc -l)
	for t in "${TARGETS[@]}"; do
		got=$(as_reader "$t" find "${ROOT[$t]}" | wc -l)
		[[ $got == "$want" ]] || log "warning: $t lists $got entries, native $want"
		as_reader "$t" head -c 4096 "${ROOT[$t]}/media/big.mp4" >/dev/null ||
			log "warning: $t cannot read media/big.mp4"
		as_reader "$t" cmp -s "$DATA/tree/d000/f00.rs" "${ROOT[$t]}/tree/d000/f00.rs" ||
			log "warning: $t serves different bytes for tree/d000/f00.rs"
	done
}

# The command of workload $1 against directory $2. hyperfine runs it without a shell (-N): its
# "subtract the shell's start-up time" correction is itself noisy on a busy machine and once turned
# a 3 ms native find into 0.1 ms. The one pipeline carries its own `sh -c`, same cost for every target.
workload_cmd() {
	local wl=$1 r
	r=$(printf '%q' "$2")
	case $wl in
	seq) echo "dd if=$r/media/big.mp4 of=/dev/null bs=1M status=none" ;;
	find) echo "find $r/tree" ;;
	du) echo "du -s $r/tree" ;;
	cat) echo "sh -c 'find $r/small -type f -print0 | xargs -0 cat'" ;;
	grep) echo "grep -r $RARE_WORD $r/tree" ;;
	rand) echo "python3 $(printf '%q' "$WORK/pread.py") $r/media/big.mp4 $RAND_IOS" ;;
	*) die "unknown workload $wl" ;;
	esac
}

# One hyperfine per (workload, target), so a failing target is reported, not fatal to the others.
run_workloads() {
	local wl t json
	RES="$WORK/results"
	mkdir -p "$RES"
	# The normal user's hyperfine writes its JSON here too.
	chmod 1777 "$RES"
	for wl in "${WORKLOADS[@]}"; do
		for t in "${TARGETS[@]}"; do
			json="$RES/$wl-$t.json"
			log "$wl on $t"
			# No cache dropping: we compare the file systems' own overhead over a warm page cache.
			if ! as_reader "$t" hyperfine -N --style basic --warmup 2 --runs "$RUNS" --export-json "$json" \
				-n "$wl-$t" -- "$(workload_cmd "$wl" "${ROOT[$t]}")" >"$RES/$wl-$t.txt" 2>&1; then
				log "  FAILED (see below)"
				tail -n 5 "$RES/$wl-$t.txt" >&2
				rm -f "$json"
			fi
		done
	done
}

# Runs a command as whoever may read target $1: a normal user's mount is not open to root
# (no allow_other).
as_reader() {
	local t=$1
	shift
	if [[ $t == vuser* ]]; then
		runuser -u "$BENCH_USER" -- "$@"
	else
		"$@"
	fi
}

# Prepares the normal user: the account, /dev/fuse as distributions ship it, a binary it can
# run, and a work tree it can read.
setup_user() {
	id "$BENCH_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$BENCH_USER"
	chmod 0666 /dev/fuse
	cp "$VEILFS" "$WORK/veilfs"
	chmod 0755 "$WORK" "$WORK/veilfs"
}

# One cold measurement of workload $1 on target $2: a fresh mount (veilfs: a new, empty scan
# cache), the workload once, unmount. Prints seconds.
cold_once() {
	local wl=$1 t=$2 mp="$WORK/mnt/cold-$2" s e pid
	case $t in
	vdef | vuser)
		rm -rf "$WORK/cold-$t-data"
		mount_veilfs "cold-$t" "$mp"
		;;
	ovl)
		rm -rf "$WORK/cold-ovl-upper" "$WORK/cold-ovl-work"
		mkdir -p "$mp" "$WORK/cold-ovl-upper" "$WORK/cold-ovl-work"
		fuse-overlayfs -o "lowerdir=$DATA,upperdir=$WORK/cold-ovl-upper,workdir=$WORK/cold-ovl-work" "$mp"
		;;
	bind)
		mkdir -p "$mp"
		bindfs "$DATA" "$mp"
		;;
	esac
	s=$(date +%s.%N)
	as_reader "$t" sh -c "$(workload_cmd "$wl" "$mp")" >/dev/null 2>&1 || true
	e=$(date +%s.%N)
	umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || log "cold $wl on $t: $mp was not mounted"
	if [[ $t == vdef || $t == vuser ]]; then
		pid=${PID_OF[cold-$t]}
		wait "$pid" 2>/dev/null || true
	fi
	awk -v s="$s" -v e="$e" 'BEGIN { printf "%.4f\n", e - s }'
}

# The cold table: COLD_REPS fresh mounts per (workload, target), median.
run_cold() {
	local wl t i
	for wl in "${COLD_WORKLOADS[@]}"; do
		for t in "${COLD_TARGETS[@]}"; do
			log "cold $wl on $t"
			for ((i = 0; i < COLD_REPS; i++)); do
				# The tree must be older than the settle time (2 s), as a real tree is: it is.
				cold_once "$wl" "$t"
			done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}' >"$RES/cold-$wl-$t.txt"
		done
	done
}

cold_cell() {
	local wl=$1 t=$2 med base
	[[ -s $RES/cold-$wl-$t.txt ]] || {
		echo "FAILED"
		return
	}
	med=$(cat "$RES/cold-$wl-$t.txt")
	base=$(median_of "$RES/$wl-native.json" 2>/dev/null || echo 0)
	awk -v m="$med" -v b="$base" 'BEGIN { if (b > 0) printf "%.4f (%.2fx)", m, m / b; else printf "%.4f (n/a)", m }'
}

median_of() { jq -r '.results[0].median' "$1"; }

# Markdown cell: "median (ratio)" for FUSE targets, the bare median for native.
cell() {
	local wl=$1 t=$2 base med
	[[ -f $RES/$wl-$t.json ]] || {
		echo "FAILED"
		return
	}
	med=$(median_of "$RES/$wl-$t.json")
	if [[ $t == native ]]; then
		printf '%.4f' "$med"
	else
		base=$(median_of "$RES/$wl-native.json" 2>/dev/null || echo 0)
		awk -v m="$med" -v b="$base" 'BEGIN { if (b > 0) printf "%.4f (%.2fx)", m, m / b; else printf "%.4f (n/a)", m }'
	fi
}

# VmHWM of a veilfs mount process; a mount that died mid-run says so instead of failing the report.
peak_rss() {
	local status="/proc/${PID_OF[$1]}/status"
	if [[ -r $status ]]; then
		awk '/^VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "$status"
	else
		echo "n/a (mount process gone)"
	fi
}

# Peak RSS of a default-profile mount over a tree of MEM_DIRS x 500 small files, after `find`,
# `du -s` and two `grep -r` (the second one served from caches).
measure_memory() {
	local tree="$WORK/memtree" mp="$WORK/mnt/mem" n
	n=$((MEM_DIRS * 500))
	log "memory: generating a ${n}-file tree"
	python3 - "$tree" "$MEM_DIRS" <<'PY'
import os, sys
root, ndirs = sys.argv[1], int(sys.argv[2])
for d in range(ndirs):
    sub = os.path.join(root, f"d{d:03d}")
    os.makedirs(sub, exist_ok=True)
    for f in range(500):
        with open(os.path.join(sub, f"f{f:03d}.rs"), "w") as out:
            out.write(f"fn f{f}() -> usize {{ {d} + {f} }}\n" * 20)
PY
	local saved=$DATA
	DATA=$tree
	mount_veilfs mem "$mp"
	DATA=$saved
	find "$mp" -type f | wc -l >/dev/null
	du -s "$mp" >/dev/null
	grep -r "$RARE_WORD" "$mp" >/dev/null || true
	grep -r "$RARE_WORD" "$mp" >/dev/null || true
	MEMORY_LINE="veilfs peak RSS (VmHWM) over a ${n}-file tree after find, du -s and grep -r twice, default profile: $(peak_rss mem)"
}

report() {
	local wl t line commit
	commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
	{
		echo "## veilfs read-path comparison ($( ((QUICK)) && echo quick || echo full))"
		echo
		echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), veilfs $commit, kernel $(uname -r), $(nproc) CPUs, load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
		echo "- data: ${BIG_MIB} MiB random file, tree $((TREE_DIRS * FILES_PER_DIR)) files, small set $((SMALL_DIRS * FILES_PER_DIR)) files; ${RAND_IOS} random 4 KiB preads"
		echo "- hyperfine --warmup 2 --runs $RUNS, warm cache; cells: median seconds (ratio to native)"
		echo
		line="| workload"
		for t in "${TARGETS[@]}"; do line+=" | ${TITLE[$t]}"; done
		echo "$line |"
		line="| ---"
		for t in "${TARGETS[@]}"; do line+=" | ---"; done
		echo "$line |"
		for wl in "${WORKLOADS[@]}"; do
			line="| ${WL_TITLE[$wl]}"
			for t in "${TARGETS[@]}"; do line+=" | $(cell "$wl" "$t")"; done
			echo "$line |"
		done
		echo
		echo "First touch (cold): a fresh mount (veilfs: empty scan cache) over a warm page cache, one run per mount, median of $COLD_REPS mounts; ratio to the warm native median above"
		echo
		line="| workload | native (warm, median s)"
		for t in "${COLD_TARGETS[@]}"; do line+=" | ${TITLE[$t]}, cold"; done
		echo "$line |"
		line="| --- | ---"
		for t in "${COLD_TARGETS[@]}"; do line+=" | ---"; done
		echo "$line |"
		for wl in "${COLD_WORKLOADS[@]}"; do
			line="| ${WL_TITLE[$wl]} | $(cell "$wl" native)"
			for t in "${COLD_TARGETS[@]}"; do line+=" | $(cold_cell "$wl" "$t")"; done
			echo "$line |"
		done
		echo
		echo "veilfs peak RSS (VmHWM) after all workloads: default profile $(peak_rss vdef), no_open = false $(peak_rss vopen), no-redaction $(peak_rss vplain)"
		echo
		echo "$MEMORY_LINE"
	} >"$WORK/table.md"
	cat "$WORK/table.md"
	if [[ -n $OUT ]]; then
		cp "$WORK/table.md" "$OUT"
		rm -rf "$OUT.json.d"
		cp -r "$RES" "$OUT.json.d"
		log "wrote $OUT (raw results in $OUT.json.d/)"
	fi
}

main() {
	parse_args "$@"
	((EUID == 0)) || die "run as root: mounting needs /dev/fuse and mount(2)"
	REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	set_sizes
	ensure_tools
	build_veilfs "$REPO"
	WORK=$(mktemp -d /tmp/veilfs-bench.XXXXXX)
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	make_data
	setup_user
	mount_all
	check_views
	run_workloads
	run_cold
	measure_memory
	report
}

main "$@"
