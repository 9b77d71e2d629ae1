#!/usr/bin/env bash
# Time `veilfs scan` (release) beside `grep -r` on the same warm, source-like tree.
#
# Usage: benches/scan.sh [FILES] [TOTAL_MB]   (default 20000 files, 100 MB)
# The tree lives in a temp dir (set SCAN_BENCH_DIR to reuse one). Uses hyperfine when present,
# else bash's `time`. Prints MB/s for each and the ratio veilfs / grep.
set -euo pipefail
files=${1:-20000}
total_mb=${2:-100}
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/target/release/veilfs"
(cd "$here" && cargo build --release --quiet)

dir=${SCAN_BENCH_DIR:-$(mktemp -d /tmp/veilfs-scan-bench.XXXXXX)}
tree="$dir/tree"
if [ ! -d "$tree" ]; then
    echo "generating $files files, ~$total_mb MB in $tree" >&2
    python3 - "$tree" "$files" "$total_mb" <<'PY'
import os, random, sys
root, files, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) << 20
random.seed(16)
words = ("fn let mut impl struct pub use match self return if else for while loop "
         "Ok Err Some None String Vec Result Option usize u64 config path error").split()
def line():
    return "    " + " ".join(random.choice(words) for _ in range(random.randint(3, 12))) + ";\n"
block = "".join(line() for _ in range(4000)).encode()  # ~200 KB of code-like text
per = total // files
for i in range(files):
    d = os.path.join(root, "crate%02d" % (i % 40), "src", "mod%03d" % (i // 40 % 25))
    os.makedirs(d, exist_ok=True)
    size = max(64, int(random.expovariate(1 / per)))
    off = random.randrange(0, len(block) - 1)
    data = (block[off:] + block) * (size // len(block) + 1)
    with open(os.path.join(d, "f%05d.rs" % i), "wb") as f:
        f.write(data[:size])
# a few secrets so the scan has findings to report
with open(os.path.join(root, "crate00", "src", "config.rs"), "w") as f:
    f.write('const KEY: &str = "AKIAIOSFODNN7EXAMPL3";\n')
PY
fi
bytes=$(du -sb --apparent-size "$tree" | cut -f1)
mb=$(awk -v b="$bytes" 'BEGIN{printf "%.1f", b/1048576}')
echo "tree: $(find "$tree" -type f | wc -l) files, $mb MB; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"

# Warm the page cache.
cat $(find "$tree" -type f) > /dev/null
grep -r -q zzz_never_matches "$tree" || true

scan="$bin scan $tree > /dev/null 2>&1"
grepc="grep -r -c zzz_never_matches $tree > /dev/null || true"
best() { local b=999999; for _ in 1 2 3; do local s e; s=$(date +%s.%N); bash -c "$1"; e=$(date +%s.%N); b=$(awk -v b="$b" -v s="$s" -v e="$e" 'BEGIN{t=e-s; print (t<b)?t:b}'); done; echo "$b"; }
if command -v hyperfine > /dev/null; then
    hyperfine --warmup 1 --runs 5 --export-json "$dir/scan.json" -n veilfs-scan "$scan" -n grep-r "$grepc" >&2
    read -r t_scan t_grep < <(python3 -c 'import json,sys;r=json.load(open(sys.argv[1]))["results"];print(r[0]["median"],r[1]["median"])' "$dir/scan.json")
else
    t_scan=$(best "$scan")
    t_grep=$(best "$grepc")
fi
# The fixed cost (profile + rule compilation) is paid once per run, whatever the tree's size:
# time it on an empty tree, and report the throughput of the walk + scan without it too.
mkdir -p "$dir/empty"
cpu=0
if [ -x /usr/bin/time ]; then
    /usr/bin/time -o "$dir/cpu" -f "%U %S" "$bin" scan "$tree" > /dev/null 2>&1 || true
    cpu=$(cat "$dir/cpu")
fi
t_fixed=$(best "$bin scan $dir/empty > /dev/null 2>&1" 2>/dev/null || echo 0)
awk -v mb="$mb" -v s="$t_scan" -v g="$t_grep" -v f="$t_fixed" -v cpu="$cpu" 'BEGIN{
    printf "veilfs scan: %.3f s  %.0f MB/s\n", s, mb/s
    printf "grep -r:     %.3f s  %.0f MB/s\n", g, mb/g
    printf "ratio veilfs/grep throughput: %.2f\n", g/s
    split(cpu, c, " ")
    printf "veilfs fixed cost (empty tree): %.3f s; without it: %.0f MB/s; CPU (user+sys) %.2f s\n", f, mb/(s-f), c[1]+c[2] }'
echo "tree kept in $dir (SCAN_BENCH_DIR=$dir to reuse)"
