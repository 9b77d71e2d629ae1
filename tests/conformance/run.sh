#!/usr/bin/env bash
# POSIX conformance of a writable veilfs mount: pjdfstest (every case) and fsx (100k ops).
# Usage: tests/conformance/run.sh VEILFS_BINARY [MODE]   (MODE: snapshot, the default)
#   APPLY=deferred (environment) runs snapshot mode with `[write] apply = "deferred"`.
# Needs root, /dev/fuse, and `pjdfstest` + `fsx` on PATH (tests/run-all.sh installs them).
set -euo pipefail
bin=$(realpath "$1")
mode=${2:-snapshot}
here=$(cd "$(dirname "$0")" && pwd)
ops=${FSX_OPS:-100000}

getent group tests >/dev/null || groupadd tests
getent passwd tests >/dev/null || useradd -g tests -M -d / -s /usr/sbin/nologin tests

# Every parent of the mount must be world-searchable for pjdfstest's user switching.
work=$(mktemp -d /tmp/veilfs-conformance.XXXXXX)
chmod 755 "$work"
mkdir -p "$work/scope" "$work/mp" "$work/second" "$work/artifacts"
chmod 755 "$work/scope" "$work/mp"
pid=""
cleanup() {
  set +e
  if mountpoint -q "$work/mp"; then umount -l "$work/mp"; fi
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  mountpoint -q "$work/second" && umount -l "$work/second"
  rm -rf "$work"
}
trap cleanup EXIT
mount -t tmpfs -o size=64m tmpfs "$work/second"
profile=$work/profile.toml
sed "s/^mode = \"snapshot\"$/mode = \"snapshot\"\napply = \"${APPLY:-immediate}\"/" "$here/writable.toml" > "$profile"

mount_veilfs() {
  # Emptied here, not by the background job's own redirection: that one may run after the wait
  # below has already read the previous mount's "mounted" line (and fsx then wrote into the bare
  # directory, so the real mount found it not empty).
  : > "$work/mount.out"
  : > "$work/mount.err"
  "$bin" mount --allow-other --mode "$mode" --store "$work/store" \
    --profile "$profile" "$work/scope" "$work/mp" > "$work/mount.out" 2> "$work/mount.err" &
  pid=$!
  # The mount prints its line only once the kernel handshake is done.
  for _ in $(seq 1 200); do
    grep -q "mounted" "$work/mount.out" 2>/dev/null && mountpoint -q "$work/mp" && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$work/mount.err"; return 1; }
    read -r -t 0.05 < /dev/zero || true
  done
  echo "mount did not come up"; cat "$work/mount.err"; return 1
}
unmount_veilfs() {
  if ! "$bin" unmount "$work/mp"; then
    echo "the mount was gone before unmount; its log ends:"
    tail -20 "$work/mount.err"
  fi
  local rc=0
  wait "$pid" || rc=$?
  pid=""
  if [ "$rc" -ne 0 ]; then
    echo "the mount process exited with status $rc:"
    tail -20 "$work/mount.err"
    return 1
  fi
}

echo "== pjdfstest on a $mode mount"
mount_veilfs
mkdir "$work/mp/pjd"
chmod 777 "$work/mp/pjd"
set +e
(cd "$work/mp/pjd" && umask 022 && RUST_BACKTRACE=0 pjdfstest -c "$here/pjdfstest.toml" \
  -s "$work/second" -p "$work/mp/pjd") > "$work/pjdfstest.log" 2>&1
pjd=$?
set -e
grep -E -A3 "FAILED$" "$work/pjdfstest.log" | head -80 || true
summary=$(grep "^Summary" "$work/pjdfstest.log" || echo "Summary: missing")
echo "$summary"
unmount_veilfs

echo "== fsx ($ops operations) on a $mode mount"
rm -rf "$work/scope"/* "$work/store"
mount_veilfs
set +e
fsx -q -f "$here/fsx.toml" -N "$ops" -S "${FSX_SEED:-1}" -P "$work/artifacts" "$work/mp/fsx.dat" > "$work/fsx.log" 2>&1
fsxrc=$?
set -e
grep -v "^  " "$work/fsx.log" | tail -25
unmount_veilfs

echo "== verify the store after the fsx session"
"$bin" verify --store "$work/store"

if [ "$pjd" -ne 0 ] || [ "$fsxrc" -ne 0 ]; then
  echo "conformance FAILED (pjdfstest exit $pjd, fsx exit $fsxrc)"
  exit 1
fi
case "$summary" in
  *" 0 failed"*) echo "conformance OK: $summary; fsx $ops ops A-OK" ;;
  *) echo "conformance FAILED: $summary"; exit 1 ;;
esac
