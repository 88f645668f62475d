"""Live burst: 1,000 webhook events in 5 s while the window is open (offscreen, same process).

    python bench/bench_live_burst.py [--events 1000] [--seconds 5] [--quick]

The window, its GatewayController and the gateway it starts share one process, as
in the real app; the sandbox plays Stripe in its own process. A load generator
process POSTs signed ``charge.succeeded`` events (each for its own captured charge)
at an even rate. A 5 ms ``QTimer`` on the GUI thread records the gap between its
ticks: the longest gap over 5 ms is the longest the window froze (target <= 50 ms).
Also prints the gaps while idle (the baseline), when the table showed every row, and
when the processor had made every transfer.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools
from collections.abc import Callable

from bench.common import (
    LoadClient,
    LoadResult,
    SandboxProcess,
    charge_event_template,
    desktop_env,
    event_body,
    load_average,
    machine,
    open_window,
    percentile,
    process_events_until,
    rss_mb,
    webhook_request,
)

TICK_MS = 5


class Ticker:
    """A GUI-thread timer whose tick gaps say how long the event loop was blocked.

    Each tick also notes the GUI thread's run delay (``/proc/thread-self/schedstat``:
    time it was ready to run but waited for a CPU), so a stall splits into CPU
    starvation (other processes, or this one's threads, on the 2 cores) and the rest
    (Qt or Python work, waits for the GIL).
    """

    def __init__(self) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.ticks: list[float] = []
        self.run_delays: list[int] = []  # ns, cumulative
        self._schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)  # GUI thread
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self.on_tick)

    def on_tick(self) -> None:
        self.ticks.append(time.perf_counter())
        self.run_delays.append(int(os.pread(self._schedstat, 100, 0).split()[1]))

    def stalls(self, start: float, end: float) -> list[float]:
        """Milliseconds each gap in [start, end] exceeded the tick interval."""
        return [s for _a, _b, s, _w in self.gaps(start, end)]

    def gaps(self, start: float, end: float) -> list[tuple[float, float, float, float]]:
        """(tick, next tick, stall ms, ms of it the GUI thread waited for a CPU)."""
        kept = [i for i, x in enumerate(self.ticks) if start <= x <= end]
        return [
            (
                self.ticks[i],
                self.ticks[j],
                max(0.0, (self.ticks[j] - self.ticks[i]) * 1000 - TICK_MS),
                (self.run_delays[j] - self.run_delays[i]) / 1e6,
            )
            for i, j in itertools.pairwise(kept)
        ]


def cpu_times() -> tuple[float, float]:
    """(seconds all CPUs were busy, seconds this process ran), both cumulative."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    own = os.times()
    return busy / ticks, own.user + own.system


class GcLog:
    """Start and end of every garbage collection (gc.callbacks), by generation."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float, int]] = []  # start, end, generation
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
        else:
            self.pauses.append((self._started, now, info["generation"]))

    def summary(self, start: float, end: float) -> str:
        inside = [(a, b, g) for a, b, g in self.pauses if start <= a <= end]
        parts = []
        for generation in (0, 1, 2):
            ms = [(b - a) * 1000 for a, b, g in inside if g == generation]
            if ms:
                parts.append(
                    f"gen{generation}: {len(ms)}, longest {max(ms):.1f} ms, total {sum(ms):.0f} ms"
                )
        return "; ".join(parts) or "none"

    def during(self, start: float, end: float) -> float:
        """Milliseconds of collection inside [start, end]."""
        overlaps = [(max(a, start), min(b, end)) for a, b, _g in self.pauses]
        return sum((b - a) * 1000 for a, b in overlaps if b > a)


class GuiTrace:
    """Calls from Qt into Python on the GUI thread: (start, end, name), via sys.setprofile.

    Only the outermost calls (made from the event loop) are kept. Costs some GUI time
    itself: a diagnostic, not for the headline figures.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, str]] = []
        self._open: dict[int, tuple[float, str]] = {}
        self._loops = {"process_events_until", "run_loop_until"}

    def __call__(self, frame: Any, event: str, _arg: Any) -> None:
        if event not in ("call", "return"):
            return
        back = frame.f_back
        if back is None or back.f_code.co_name not in self._loops:
            return
        if event == "call":
            self._open[id(frame)] = (time.perf_counter(), frame.f_code.co_qualname)
        else:
            started = self._open.pop(id(frame), None)
            if started is not None:
                self.calls.append((started[0], time.perf_counter(), started[1]))

    def inside(self, start: float, end: float) -> str:
        names: dict[str, list[float]] = {}
        for a, b, name in self.calls:
            if b > start and a < end:
                names.setdefault(name, []).append((b - a) * 1000)
        return ", ".join(
            f"{name} x{len(ms)} {sum(ms):.1f} ms"
            for name, ms in sorted(names.items(), key=lambda kv: -sum(kv[1]))
        )


def run_loop_until(condition: Callable[[], bool], timeout: float) -> bool:
    """As the app runs: QEventLoop.exec(), with the condition checked every 50 ms.

    ``process_events_until`` returns to Python after every batch of events, and each
    return waits for the GIL like any call into Python: the harness's own stalls.
    """
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    deadline = time.monotonic() + timeout
    met = condition()

    def check() -> None:
        nonlocal met
        met = condition()
        if met or time.monotonic() > deadline:
            loop.quit()

    timer = QTimer()
    timer.setInterval(50)
    timer.timeout.connect(check)
    if not met:
        timer.start()
        loop.exec()
        timer.stop()
    return met


def describe(name: str, stalls: list[float]) -> str:
    if not stalls:
        return f"{name:<34} (no ticks)"
    over = sum(s > 50 for s in stalls)
    return (
        f"{name:<34} longest stall {max(stalls):6.1f} ms, p99 {percentile(stalls, 99):5.1f} ms,"
        f" {over} over 50 ms ({len(stalls)} ticks)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="300 events in 1.5 s")
    parser.add_argument(
        "--threads", type=int, help="waitress threads of the embedded gateway (default: the app's)"
    )
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="skip the gc.collect(); gc.freeze() the app does once its window is shown",
    )
    parser.add_argument("--worst", type=int, default=5, help="list the N longest stalls")
    parser.add_argument(
        "--loop",
        choices=("poll", "exec"),
        default="poll",
        help="during the burst: poll processEvents() from Python (default), or run a "
        "QEventLoop as the app's exec() does",
    )
    parser.add_argument(
        "--switch-interval", type=float, help="sys.setswitchinterval() for the whole run"
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="list the GUI thread's Python calls inside the longest stalls (costs GUI time)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.seconds = 300, 1.5
    print(machine())
    print(f"load average at the start: {load_average()}")
    rate = args.events / args.seconds
    print(f"{args.events} signed charge.succeeded events at {rate:.0f}/s, window offscreen")

    with (
        tempfile.TemporaryDirectory(prefix="bench-burst-") as tmp_name,
        SandboxProcess() as sandbox,
        LoadClient() as client,
    ):
        tmp = Path(tmp_name)
        desktop_env(tmp)
        from gateway.models import ChargeFilter, TransferStatus

        charges = sandbox.charges(args.events)
        app, controller, window = open_window(tmp, sandbox, "bench")
        if not args.no_freeze:  # as ursus_desktop.__main__ does after window.show()
            gc.collect()
            gc.freeze()
        if args.threads:
            controller.gateway_threads = args.threads
        if args.switch_interval:
            sys.setswitchinterval(args.switch_interval)
        print(
            f"gateway threads: {controller.gateway_threads}, gc frozen: {not args.no_freeze}, "
            f"switch interval {sys.getswitchinterval() * 1000:g} ms, event loop: {args.loop}"
        )
        controller.start()
        if not process_events_until(lambda: controller.is_running and not controller.busy, 20):
            raise SystemExit("the gateway did not start")
        server = controller.server
        assert server is not None
        template = charge_event_template()
        requests = [
            webhook_request(
                "127.0.0.1",
                server.port,
                event_body(template, f"evt_burst_{i:06d}", ch),
                sandbox.webhook_secret,
            )
            for i, ch in enumerate(charges)
        ]
        rss_idle = rss_mb()

        ticker = Ticker()
        gc_log = GcLog()
        gc.callbacks.append(gc_log)
        ticker.timer.start()
        process_events_until(lambda: False, 1.0)  # idle baseline
        idle_end = time.perf_counter()

        result: dict[str, Any] = {}

        def burst() -> None:  # waits on the load process: holds no GIL while it runs
            result["load"] = client.run(
                "127.0.0.1", server.port, requests, args.concurrency, rate=rate
            )

        trace = GuiTrace() if args.trace else None
        if trace is not None:
            sys.setprofile(trace)  # this (the GUI) thread only
        sender = threading.Thread(target=burst, name="bench-burst")
        cpu_start = cpu_times()
        burst_start = time.perf_counter()
        sender.start()
        model = window.model
        shown_at = made_at = 0.0

        def done() -> bool:
            nonlocal shown_at, made_at
            now = time.perf_counter()
            if not shown_at and model.rowCount() >= args.events:
                shown_at = now
            if shown_at and not made_at:
                counts = controller.counts()
                if counts is not None and counts.pending_transfers == 0 and counts.charges:
                    made_at = now
            return bool(shown_at and made_at and not sender.is_alive())

        wait = run_loop_until if args.loop == "exec" else process_events_until
        finished = wait(done, 300)
        end = time.perf_counter()
        cpu_end = cpu_times()
        ticker.timer.stop()
        sys.setprofile(None)
        gc.callbacks.remove(gc_log)
        sender.join()
        load: LoadResult = result["load"]
        ledger = controller.ledger
        assert ledger is not None
        created = sum(
            1
            for v in ledger.iter_charges(ChargeFilter())
            if v.transfer_status is TransferStatus.CREATED
        )
        window.grab()
        rows = model.rowCount()
        rss_end = rss_mb()

        burst_end = burst_start + load.wall
        non_200 = sum(n for s, n in load.statuses.items() if s != 200) + load.errors
        print(
            f"burst sent in {load.wall:.2f} s ({load.rate:.0f} ev/s), webhook p50 "
            f"{load.p(50):.1f} ms, p99 {load.p(99):.1f} ms"
            + (f", NON-200: {non_200}" if non_200 else "")
        )
        print(describe("GUI event loop, idle (1 s)", ticker.stalls(burst_start - 1.0, idle_end)))
        print(describe("GUI event loop, during the burst", ticker.stalls(burst_start, burst_end)))
        print(describe("GUI event loop, burst -> all done", ticker.stalls(burst_start, end)))
        print(f"garbage collections, burst -> all done: {gc_log.summary(burst_start, end)}")
        busy = (cpu_end[0] - cpu_start[0]) / (end - burst_start) / (os.cpu_count() or 1)
        own = (cpu_end[1] - cpu_start[1]) / (end - burst_start) / (os.cpu_count() or 1)
        print(
            f"CPUs busy, burst -> all done: {busy:.0%} ({own:.0%} this process, "
            f"{max(busy - own, 0):.0%} other processes: the sandbox, the load, anything else)"
        )
        gaps = sorted(ticker.gaps(burst_start, end), key=lambda g: g[2], reverse=True)
        for a, b, stall, waited in gaps[: args.worst]:
            print(
                f"  stall {stall:6.1f} ms at +{a - burst_start:6.2f} s: GUI thread waited for a"
                f" CPU {waited:5.1f} ms, garbage collection inside {gc_log.during(a, b):5.1f} ms"
            )
            if trace is not None:
                print(f"    Python calls inside: {trace.inside(a, b) or 'none'}")
        worst = max(ticker.stalls(burst_start, end), default=0.0)
        print(
            f"target: longest stall <= 50 ms: {'met' if worst <= 50 else 'MISSED'} ({worst:.1f} ms)"
        )
        print(
            f"table rows: {rows} of {args.events} "
            f"(all shown {shown_at - burst_start:.2f} s after the burst began)"
        )
        print(
            f"transfers CREATED: {created} of {args.events} "
            f"(all made {made_at - burst_start:.2f} s after the burst began)"
        )
        print(f"RSS: {rss_idle:.0f} MiB idle with the gateway running, {rss_end:.0f} MiB after")
        controller.shutdown()
        window.close()
        window.deleteLater()
        process_events_until(lambda: True, 0)
        del app
    print(f"load average at the end: {load_average()}")
    return 0 if finished and rows == args.events and created == args.events else 1


if __name__ == "__main__":
    raise SystemExit(main())
