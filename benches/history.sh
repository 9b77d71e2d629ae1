#!/usr/bin/env bash
# First-mount cost of `redaction.history = "allow-if-clean"` on a repository with thousands of
# commits: how long the pack scan takes (the mount's "scanned a git pack" log line), how long the
# agent's first `git log -p` through the mount takes, and `veilfs scan` of the same repository.
#
# Usage: benches/history.sh [COMMITS] [FILES]   (default 3000 commits over 600 files)
# HISTORY_BENCH_SECRET=1 adds a token in the middle commit and removes it in the next: the scan
# must then name that commit and path, and the first `git log -p` must fail.
# The repository is generated (git fast-import: a source tree edited a few files per commit,
# then `git gc`) in a temp dir; set HISTORY_BENCH_DIR to reuse one. BIN picks the binary
# (default target/release/veilfs, built if missing; BIN=target/debug/veilfs for a debug build).
set -euo pipefail
commits=${1:-3000}
files=${2:-600}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$here/target/release/veilfs}
if [ ! -x "$bin" ]; then
    (cd "$here" && cargo build --release --quiet)
fi

dir=${HISTORY_BENCH_DIR:-$(mktemp -d /tmp/veilfs-history-bench.XXXXXX)}
repo="$dir/repo"
if [ ! -d "$repo/.git" ]; then
    echo "generating $commits commits over $files files in $repo" >&2
    git init -q -b main "$repo"
    python3 - "$commits" "$files" "${HISTORY_BENCH_SECRET:-0}" <<'PY' | (cd "$repo" && git fast-import --quiet)
import random, sys
commits, files, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
random.seed(16)
words = ("fn let mut impl struct pub use match self return if else for while loop Ok Err "
         "Some None String Vec Result Option usize u64 config path error request reply "
         "inode handle policy view scan cache").split()
def line():
    return "    " + " ".join(random.choice(words) for _ in range(random.randint(3, 12))) + ";\n"
paths = ["crate%02d/src/mod%02d/file%03d.rs" % (i % 12, i // 12 % 10, i) for i in range(files)]
content = {p: [line() for _ in range(random.randint(40, 160))] for p in paths}
out = sys.stdout.buffer
def data(b):
    out.write(b"data %d\n" % len(b)); out.write(b); out.write(b"\n")
t = 1_600_000_000
for c in range(commits):
    out.write(b"commit refs/heads/main\nmark :%d\n" % (c + 1))
    out.write(b"committer Dev <dev@example.org> %d +0000\n" % (t + c * 3600))
    data(b"change %d: edit a few files\n" % c)
    if c:
        out.write(b"from :%d\n" % c)
    touched = paths if c == 0 else random.sample(paths, random.randint(1, 4))
    if secret and c in (commits // 2, commits // 2 + 1):
        # A token added in one commit and removed in the next: stored as a delta after gc.
        p = paths[7]
        touched = [p] + [q for q in touched if q != p]
        if c == commits // 2:
            content[p].insert(len(content[p]) // 2, '    let token = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";\n')
        else:
            content[p] = [l for l in content[p] if "ghp_" not in l]
    for p in touched:
        lines = content[p]
        for _ in range(random.randint(1, 6)):
            i = random.randrange(len(lines) + 1)
            if random.random() < 0.3 and lines:
                lines.pop(min(i, len(lines) - 1))
            else:
                lines.insert(i, line())
        out.write(b"M 100644 inline %s\n" % p.encode())
        data("".join(lines).encode())
    out.write(b"\n")
PY
    (cd "$repo" && git checkout -q main && git gc -q --aggressive)
fi
pack=$(ls "$repo"/.git/objects/pack/*.pack)
echo "repository: $(git -C "$repo" rev-list --count HEAD) commits, $(git -C "$repo" count-objects -v | awk '/^count:/{l=$2} /^in-pack:/{p=$2} END{print p+l}') objects, pack $(du -h "$pack" | cut -f1), working tree $(du -sh --exclude=.git "$repo" | cut -f1)"

# `veilfs scan` of the whole repository (working tree and history).
start=$(date +%s.%N)
"$bin" scan "$repo" > "$dir/scan.out" 2> "$dir/scan.err" || true
end=$(date +%s.%N)
echo "veilfs scan: $(echo "$end - $start" | bc) s ($(tail -1 "$dir/scan.err"))"
grep -v '^redact' "$dir/scan.out" | grep -v 'opaque' || true

# First mount: no saved verdicts (a fresh store), so the pack is scanned.
mp="$dir/mp"
mkdir -p "$mp"
export XDG_DATA_HOME="$dir/data-$$"
RUST_LOG=${RUST_LOG:-warn,veilfs::history=info} "$bin" mount "$repo" "$mp" > "$dir/mount.out" 2> "$dir/mount.err" &
pid=$!
for _ in $(seq 600); do grep -q mounted "$dir/mount.out" 2>/dev/null && break; sleep 0.1; done
start=$(date +%s.%N)
(cd "$mp" && git log -p > /dev/null 2> "$dir/git.err") && ok=ok || ok="failed: $(head -1 "$dir/git.err")"
end=$(date +%s.%N)
echo "first git log -p through the mount: $(echo "$end - $start" | bc) s ($ok)"
start=$(date +%s.%N)
(cd "$mp" && git log -p > /dev/null 2>&1) || true
end=$(date +%s.%N)
echo "second git log -p: $(echo "$end - $start" | bc) s"
"$bin" unmount "$mp" || umount -l "$mp"
wait "$pid" || true
grep -o 'scanned a git pack.*' "$dir/mount.err" | head -3 || true
grep -h 'ms=' "$dir/mount.err" | sed 's/.*\(bytes=[0-9]*\).*\(ms=[0-9]*\).*/pack scan: \1 \2/' | head -3
