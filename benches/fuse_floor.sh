#!/usr/bin/env bash
# The floor under every FUSE workload: what one request the server answers at once costs the
# caller in wall time, on this machine, for veilfs in each mode and for bindfs and
# fuse-overlayfs, against the same call on the native folder.
#
# The probe is `getxattr` of an attribute nobody set: the kernel caches no extended attribute
# of a FUSE file, so every call is one GETXATTR round trip (request queued, a server thread
# woken, its reply written, the caller woken), and each server answers it with one syscall on
# the real file. A workload's floor ratio is then (native time per file + synchronous requests
# per file x this round trip) / native time per file, whatever the server does per request;
# `write_requests.sh` counts the requests per file (RELEASE and FORGET are sent without waiting).
#
# Usage: sudo benches/fuse_floor.sh [--calls N]     (VEILFS_BIN=path measures that binary)
# Prints microseconds per call: the best of five loops of N calls (default 20000) per target.
set -euo pipefail
CALLS=20000
while (($#)); do
	case $1 in
	--calls) CALLS=${2:?}; shift ;;
	*) echo "unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }
for c in bindfs fuse-overlayfs python3; do
	command -v "$c" >/dev/null ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bindfs fuse-overlayfs python3 >/dev/null
done
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/benches/mount_wait.sh"
if [ -n "${VEILFS_BIN:-}" ]; then
	VEILFS=$VEILFS_BIN
else
	(cd "$repo" && cargo build --release --quiet)
	VEILFS="${CARGO_TARGET_DIR:-$repo/target}/release/veilfs"
fi

W=$(mktemp -d /tmp/veilfs-floor.XXXXXX)
PID=""
cleanup() {
	set +e
	mountpoint -q "$W/mp" && umount -l "$W/mp"
	[ -z "$PID" ] || wait "$PID" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/data" "$W/mp" "$W/upper" "$W/work"
echo "int x;" > "$W/data/f.c"
printf 'version = 1\nname = "floor"\n[redaction]\nrule_sets = []\n' > "$W/p.toml"

# probe FILE: microseconds per getxattr round trip on FILE.
probe() {
	python3 - "$1" "$CALLS" <<'PY'
import errno, os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
def loop():
    t = time.perf_counter()
    for _ in range(n):
        try:
            os.getxattr(path, "user.veilfs-floor-probe")
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                raise
    return (time.perf_counter() - t) / n * 1e6
print(f"{min(loop() for _ in range(5)):.1f}")
PY
}
row() { printf '| %s | %s |\n' "$1" "$2"; }

echo "| target | us per request |"
echo "| --- | --- |"
row native "$(probe "$W/data/f.c")"
for mode in read-only snapshot overlay; do
	rm -rf "$W/store"
	"$VEILFS" mount --mode "$mode" --store "$W/store" --profile "$W/p.toml" "$W/data" "$W/mp" \
		> "$W/out" 2> "$W/err" &
	PID=$!
	wait_mounted "$W/out" "$W/err" "$PID"
	row "veilfs $mode" "$(probe "$W/mp/f.c")"
	umount "$W/mp"
	wait "$PID"
	PID=""
done
bindfs "$W/data" "$W/mp"
row bindfs "$(probe "$W/mp/f.c")"
umount "$W/mp"
fuse-overlayfs -o "lowerdir=$W/data,upperdir=$W/upper,workdir=$W/work" "$W/mp" 2>/dev/null
row fuse-overlayfs "$(probe "$W/mp/f.c")"
umount "$W/mp"
