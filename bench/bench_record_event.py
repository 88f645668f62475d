"""Cost of Ledger.record_event (the webhook's hot path), fsync included.

    python bench/bench_record_event.py [--events 3000] [--threads 1]

Prints the mean and p50/p99 milliseconds per call against a plain sqlite3 INSERT + commit
with the same PRAGMAs in the same run (the floor: the disk's fsync).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.ledger import Ledger

RAW = os.urandom(3700)  # about a charge.succeeded event


def _summary(name: str, samples: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[int(len(ms) * 0.99) - 1]
    print(
        f"{name:<22} mean {statistics.fmean(ms):.3f} ms  p50 {ms[len(ms) // 2]:.3f} ms"
        f"  p99 {p99:.3f} ms  ({len(ms)} calls)"
    )


def bench_ledger(path: Path, events: int, threads: int) -> list[float]:
    samples: list[float] = []
    lock = threading.Lock()
    with Ledger.open(f"sqlite:///{path}") as ledger:
        ledger.add_listener(lambda: None)  # the desktop always has one

        def work(t: int) -> None:
            mine = []
            for i in range(events // threads):
                started = time.perf_counter()
                ledger.record_event(f"evt_{t}_{i:08d}", "charge.succeeded", 1, False, "ch_1", RAW)
                mine.append(time.perf_counter() - started)
            with lock:
                samples.extend(mine)

        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        started = time.perf_counter()
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        wall = time.perf_counter() - started
    print(f"record_event x{threads}: {len(samples) / wall:.0f} events/s over {wall:.2f} s")
    return samples


def bench_sqlite3(path: Path, events: int) -> list[float]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE e (seq INTEGER PRIMARY KEY, event_id TEXT UNIQUE, raw BLOB)")
    samples = []
    for i in range(events):
        started = time.perf_counter()
        db.execute("INSERT INTO e (event_id, raw) VALUES (?, ?)", (f"evt_{i:08d}", RAW))
        samples.append(time.perf_counter() - started)
    db.close()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        _summary("plain sqlite3 insert", bench_sqlite3(Path(tmp) / "raw.sqlite3", args.events))
        samples = bench_ledger(Path(tmp) / "ledger.sqlite3", args.events, args.threads)
        _summary(f"record_event x{args.threads}", samples)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
