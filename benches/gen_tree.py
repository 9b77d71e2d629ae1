"""A source-like tree for the grep benchmarks (cold_grep.sh, warm_grep.sh).

Usage: python3 gen_tree.py ROOT FILES RARE_WORD

FILES files of 1-4 KiB, 100 per directory (dNNN/fNN.rs), deterministic (seeded), no secrets;
RARE_WORD is in one file of every 5000, so grep reads every byte and redaction scans every
file. The same generator as compare.sh's tree.
"""

import os
import random
import sys

root, files, rare = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(1)
words = ("fn let mut struct impl pub use return match if else for while loop self Some None Ok Err "
         "value index buffer reader writer config path entry result error handle count offset "
         "len size node tree item list map key table cache open close read write flush").split()
for i in range(files):
    d, f = divmod(i, 100)
    sub = os.path.join(root, f"d{d:03d}")
    os.makedirs(sub, exist_ok=True)
    target = rng.randint(1024, 4096)
    lines, size = [], 0
    while size < target:
        line = "    " + " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + ";"
        lines.append(line)
        size += len(line) + 1
    if i % 5000 == 0:
        lines.insert(len(lines) // 2, f"    // {rare}")
    with open(os.path.join(sub, f"f{f:02d}.rs"), "w") as out:
        out.write("\n".join(lines) + "\n")
