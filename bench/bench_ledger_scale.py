"""Ledger scale: the desktop window over a generated ledger of 1,000,000 charges (offscreen).

    python bench/bench_ledger_scale.py [--rows 1000000] [--db PATH] [--quick]

Opens the window the way ``ursus`` does (GatewayController + MainWindow, then
``open_ledger()`` on its worker), with the settings' ``database_url`` pointing at a
ledger made by ``bench/make_ledger.py`` (generated into bench/out/ if missing; the OS
page cache is warm, as on a second start). Measures:

- open: from building the window to the table populated and painted (``grab()``
  renders every visible cell), and the process's RSS growth meanwhile
  (targets: <= 1 s, <= 100 MB);
- scrolling: to the end, and 20 jumps across the whole range, each painted;
- filtering: text (one match, no match) and status (FAILED, PENDING), each with the
  table repainted, as the filter bar's timer would do after typing.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    OUT_DIR,
    desktop_env,
    load_average,
    machine,
    median,
    peak_rss_mb,
    process_events_until,
    rss_mb,
)
from bench.make_ledger import make_ledger


class Seen:
    """When the model applied a row count and totals (they are read off the GUI thread)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.counted = 0
        self.totalled = 0
        model.counted.connect(self.on_counted)
        model.totals_changed.connect(self.on_totals)

    def reset(self) -> None:
        self.counted = self.totalled = 0

    def on_counted(self) -> None:
        self.counted += 1

    def on_totals(self) -> None:
        self.totalled += 1

    def wait(self, window: Any, started: float) -> tuple[float, float, float]:
        """Seconds from ``started`` to: count applied, table painted, totals applied."""
        if not process_events_until(lambda: self.counted > 0, 60):
            raise SystemExit("the row count never arrived")
        counted = time.perf_counter() - started
        # The view's paint asks for the rows it shows; they are read off the GUI thread.
        shown_rows(window, self.model)
        window.grab()  # renders every visible cell, with its rows
        painted = time.perf_counter() - started
        # The reset emits totals_changed at once (empty); the read result is the next one.
        if not process_events_until(lambda: self.totalled >= 2, 60):
            raise SystemExit("the totals never arrived")
        return counted, painted, time.perf_counter() - started


def shown_rows(window: Any, model: Any) -> None:
    """Run the event loop until the rows in the table's viewport are read."""
    table = window.table
    first = max(table.rowAt(0), 0)
    last = table.rowAt(table.viewport().height() - 1)
    last = model.rowCount() - 1 if last < 0 else last
    if not process_events_until(
        lambda: (
            model.rowCount() == 0
            or (model.charge_at(first) is not None and model.charge_at(last) is not None)
        ),
        60,
    ):
        raise SystemExit(f"rows {first}..{last} were never read")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="an existing ledger (default: generated)")
    parser.add_argument("--quick", action="store_true", help="200,000 rows")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows = 200_000
    db = args.db or OUT_DIR / f"ledger-{args.rows}.sqlite3"
    print(machine())
    print(f"load average at the start: {load_average()}")
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        make_ledger(db, args.rows)
        print(f"generated {db} in {time.perf_counter() - started:.1f} s")
    with open(db, "rb") as handle:  # warm the page cache: a second start, not a cold disk
        while handle.read(1 << 24):
            pass

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        desktop_env(tmp)
        from gateway.config import Settings, save_settings
        from gateway.models import ChargeFilter, TransferStatus
        from ursus_desktop.app import make_application
        from ursus_desktop.controller import GatewayController
        from ursus_desktop.main_window import MainWindow

        app = make_application(["bench"])
        config_path = tmp / "config" / "settings.json"
        save_settings(config_path, Settings(database_url=f"sqlite:///{db.resolve()}"))
        gc.collect()
        rss0 = rss_mb()

        # -- open ------------------------------------------------------------------------
        started = time.perf_counter()
        controller = GatewayController(
            config_path=config_path, data_dir=tmp / "data", log_dir=tmp / "logs"
        )
        window = MainWindow(controller, tray=False, first_run_prompt=False)
        model = window.model
        seen = Seen(model)
        window.show()
        controller.open_ledger()
        counted, painted, totalled = seen.wait(window, started)
        open_s = painted
        rss1 = rss_mb()
        rows = model.rowCount()
        ledger = controller.ledger
        assert ledger is not None
        newest = ledger.charges_page(ChargeFilter(), 0, 1)[0]
        shown = model.charge_at(0)
        assert shown is not None and shown.charge_id == newest.charge_id, "row 0 is not newest"
        print(f"rows in the table: {rows}  (ledger {db.name}, {db.stat().st_size >> 20} MiB)")
        print(
            f"open: window built -> table populated and painted in {open_s * 1000:.0f} ms "
            f"(row count applied at {counted * 1000:.0f} ms; target <= 1000 ms: "
            f"{'met' if open_s <= 1 else 'MISSED'}); totals shown at {totalled * 1000:.0f} ms"
        )
        growth = rss1 - rss0
        print(
            f"RSS: {rss0:.0f} MiB before the window, {rss1:.0f} MiB with the table shown: "
            f"+{growth:.0f} MiB (target <= 100: {'met' if growth <= 100 else 'MISSED'})"
        )
        # Where the open time goes: the model's two queries, timed again on their own.
        t = time.perf_counter()
        ledger.count_charges(ChargeFilter())
        t_count = time.perf_counter() - t
        t = time.perf_counter()
        ledger.totals(ChargeFilter())
        t_totals = time.perf_counter() - t
        t = time.perf_counter()
        ledger.charges_page(ChargeFilter(), 0, 200)
        t_page = time.perf_counter() - t
        print(
            f"  of which (re-timed): count_charges {t_count * 1000:.0f} ms, totals "
            f"{t_totals * 1000:.0f} ms, first page of 200 {t_page * 1000:.0f} ms"
        )

        # -- scrolling ---------------------------------------------------------------------
        table = window.table
        t = time.perf_counter()
        table.scrollToBottom()
        window.grab()  # asks for the rows now in view
        shown_rows(window, model)
        window.grab()
        to_end = time.perf_counter() - t
        last = model.charge_at(rows - 1)
        assert last is not None
        print(f"scroll to the end (row {rows - 1}, {last.charge_id}): {to_end * 1000:.0f} ms")
        bar = table.verticalScrollBar()
        jumps = []
        for k in range(21):
            t = time.perf_counter()
            bar.setValue(bar.maximum() * k // 20)
            window.grab()  # asks for the rows now in view
            shown_rows(window, model)
            window.grab()
            jumps.append(time.perf_counter() - t)
        print(
            f"scroll: 21 jumps across the range, painted: median {median(jumps) * 1000:.0f} ms,"
            f" max {max(jumps) * 1000:.0f} ms ({model.page_loads} pages read so far)"
        )
        table.scrollToTop()

        # -- filtering ---------------------------------------------------------------------
        def apply() -> tuple[float, float, int]:
            window._filter_timer.stop()  # the bench applies at once what the timer would
            t = time.perf_counter()
            seen.reset()
            window.on_filter_timer_timeout()
            _counted, painted, totalled = seen.wait(window, t)
            return painted, totalled, model.rowCount()

        wanted = newest.order_id[:14] if newest.order_id.startswith("order-") else "order-0050"
        cases = [
            (f"text {wanted!r}", lambda: window.filter_text.setText(wanted)),
            ("text 'no-such-order'", lambda: window.filter_text.setText("no-such-order")),
            ("text cleared", lambda: window.filter_text.setText("")),
        ]
        for status in (TransferStatus.FAILED, TransferStatus.PENDING):
            index = window.filter_status.findData(str(status))
            cases.append(
                (f"status {status}", lambda i=index: window.filter_status.setCurrentIndex(i))
            )
        cases.append(("status all", lambda: window.filter_status.setCurrentIndex(0)))
        for name, change in cases:
            change()
            shown, totalled, matched = apply()
            print(
                f"filter {name:<26} rows shown {shown * 1000:5.0f} ms, totals "
                f"{totalled * 1000:5.0f} ms  ({matched} rows)"
            )

        rss2 = rss_mb()
        print(
            f"RSS after scrolling and filtering: {rss2:.0f} MiB (+{rss2 - rss0:.0f} MiB), "
            f"peak {peak_rss_mb():.0f} MiB"
        )
        controller.shutdown()
        window.close()
        window.deleteLater()
        controller.deleteLater()
        process_events_until(lambda: True, 0)
        app.processEvents()
    print(f"load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
