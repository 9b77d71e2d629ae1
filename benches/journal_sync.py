#!/usr/bin/env python3
"""What one journal record + fdatasync costs: appended (the file grows, so ext4 must commit
metadata) against written over zeros written ahead (data only), as veilfs's journal does.

Usage: benches/journal_sync.py [DIR] [--records N] [--rounds R]
DIR is where the probe files go (default /tmp: put it on the store's filesystem).
"""
import argparse
import os
import statistics
import time

RECORD = b"x" * 250 + b"\n"


def probe(path: str, over_zeros: bool, n: int) -> float:
    flags = os.O_CREAT | os.O_TRUNC | os.O_WRONLY | (0 if over_zeros else os.O_APPEND)
    fd = os.open(path, flags, 0o600)
    try:
        if over_zeros:
            os.pwrite(fd, b"\0" * (1 << 20), 0)
            os.fsync(fd)
        off, times = 0, []
        for _ in range(n):
            t = time.perf_counter()
            if over_zeros:
                os.pwrite(fd, RECORD, off)
            else:
                os.write(fd, RECORD)
            off += len(RECORD)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e6
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?", default="/tmp")
    ap.add_argument("--records", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    path = os.path.join(a.dir, f".veilfs-journal-sync-{os.getpid()}")
    for _ in range(a.rounds):
        app = probe(path, False, a.records)
        zer = probe(path, True, a.records)
        print(f"append {app:.0f} us   over zeros {zer:.0f} us   (median per record)")


if __name__ == "__main__":
    main()
