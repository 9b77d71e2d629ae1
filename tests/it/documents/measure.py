"""First-open cost of a document view (issue #20's closing note): makes a ~1 MB docx and a ~5 MB
xlsx (text with e-mail addresses to mask), mounts them with the given veilfs binary and times
the first stat (which builds the view), the first full read, and a second read, and the CPU time
the mount process spent on all three.

    target/doc-venv/bin/python tests/it/documents/measure.py target/release/veilfs

Not a test: numbers depend on the machine."""
import os
import random
import subprocess
import sys
import tempfile
import time

import docx
import openpyxl


def words(rng, n):
    vocab = "revenue plan quarter growth budget review team launch market sales forecast".split()
    return " ".join(rng.choice(vocab) for _ in range(n))


def main(veilfs):
    rng = random.Random(7)
    scope = tempfile.mkdtemp(prefix="veilfs-measure-")
    mp = tempfile.mkdtemp(prefix="veilfs-measure-mp-")
    d = docx.Document()
    while True:
        for _ in range(200):
            d.add_paragraph(words(rng, 40) + " contact user%d@example.org today" % rng.randrange(10**6))
        d.save(os.path.join(scope, "big.docx"))
        if os.path.getsize(os.path.join(scope, "big.docx")) >= 1_000_000:
            break
    wb = openpyxl.Workbook()
    ws = wb.active
    row = 0
    while True:
        for _ in range(5000):
            row += 1
            ws.append([row, words(rng, 6), "user%d@example.org" % rng.randrange(10**6), rng.random() * 1000])
        wb.save(os.path.join(scope, "big.xlsx"))
        if os.path.getsize(os.path.join(scope, "big.xlsx")) >= 5_000_000:
            break
    time.sleep(2.5)  # past veilfs's settle time, so the first open does not wait for it
    p = subprocess.Popen([veilfs, "mount", scope, mp], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdout.readline()

    def cpu():
        # CPU seconds the mount process spent (all its threads): on a loaded machine the wall
        # time says more about the other processes than about veilfs.
        tot = 0
        for t in os.listdir(f"/proc/{p.pid}/task"):
            f = open(f"/proc/{p.pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()
            tot += int(f[11]) + int(f[12])
        return tot / os.sysconf("SC_CLK_TCK")

    try:
        for name in ("big.docx", "big.xlsx"):
            real = os.path.getsize(os.path.join(scope, name))
            c0 = cpu()
            t0 = time.perf_counter()
            size = os.stat(os.path.join(mp, name)).st_size
            t1 = time.perf_counter()
            with open(os.path.join(mp, name), "rb") as f:
                n = len(f.read())
            t2 = time.perf_counter()
            with open(os.path.join(mp, name), "rb") as f:
                f.read()
            t3 = time.perf_counter()
            c3 = cpu()
            print(f"{name}: real {real} B, view {size} B (read {n}); first stat (builds the view) "
                  f"{(t1 - t0) * 1000:.0f} ms, first read {(t2 - t1) * 1000:.0f} ms, second read {(t3 - t2) * 1000:.0f} ms; "
                  f"mount CPU {(c3 - c0) * 1000:.0f} ms")
    finally:
        subprocess.run([veilfs, "unmount", mp])
        p.wait()


if __name__ == "__main__":
    main(sys.argv[1])
