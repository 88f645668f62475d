"""Suite 4: the ledger cannot write (locked, disk full, read-only) -> 503; nothing 200'd is lost.

A real GatewayServer receives signed events; part-way through, its SQLite file
becomes unwritable. Every delivery during the fault must get a 503 (Stripe
retries those), each with a clear line in error.log; after the fault clears,
Stripe's re-deliveries are stored and every event that ever got a 200 is
processed into exactly one transfer.

How each fault is made (the tests run as root, which ignores file permissions):
- locked: another connection holds ``BEGIN EXCLUSIVE`` longer than the ledger's busy
  timeout. The timeout is a ``Ledger.open`` argument (default 10 s); GatewayServer
  accepts an opened ledger, so the test opens one with 300 ms.
- disk full: the data dir is a 16 MiB tmpfs (``mount -t tmpfs``, needs root) filled up
  with a filler file; removing the file clears the fault.
- read-only: ``chattr +i`` on the data dir, the database and its WAL (writes through
  the already-open descriptors then fail with EPERM, as on a read-only remount; the
  ``-shm`` index is left alone because SQLite maps it into memory, and a write fault
  there is a SIGBUS, not an error). ``chmod`` would not stop root; a read-only
  remount or bind mount is refused (EBUSY) while SQLite holds the file open.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from reliability_support import (
    GATEWAY_BIN,
    Deliverer,
    Delivery,
    Sale,
    error_log,
    event_statuses,
    gateway_config,
    gateway_env,
    make_sales,
    reconcile,
    transfers_done,
    varied_amounts,
    wait_until,
)

from gateway.ledger import Ledger
from gateway.sandbox import SandboxServer
from gateway.service import GatewayServer

BUSY_TIMEOUT_MS = 300
STORE_ERROR_RE = re.compile(
    r"ERROR gateway\.app Could not store webhook event (evt_\w+) \(charge\.\w+\): "
    r"ledger could not record the event: (.+)"
)


@dataclass(slots=True)
class Fault:
    """Makes the ledger unwritable (``apply``) and writable again (``clear``)."""

    name: str
    apply: Callable[[], None]
    clear: Callable[[], None]
    reasons: tuple[str, ...]  # what SQLite says in the log line


def run_storage_fault(
    sandbox: SandboxServer,
    started: list[GatewayServer],
    opened: list[Ledger],
    tmp: Path,
    data_dir: Path,
    make_fault: Callable[[Path], Fault],
    n: int = 30,
) -> None:
    sales: list[Sale] = make_sales(sandbox, varied_amounts(n, seed=n), prefix="disk")
    events = [e for sale in sales for e in sale.events]
    db = data_dir / "ursus.sqlite3"
    ledger = Ledger.open(f"sqlite:///{db}", busy_timeout_ms=BUSY_TIMEOUT_MS)
    opened.append(ledger)
    server = GatewayServer(gateway_config(sandbox, tmp), ledger=ledger)
    started.append(server)
    server.start()
    deliverer = Deliverer(server.webhook_url, sandbox.webhook_secret, 8)
    fault = make_fault(db)
    third = len(events) // 3
    # Every Stripe call takes 50 ms, so the processor is still busy with the first
    # third when the fault starts: its writes fail too.
    sandbox.faults.latency = 0.05
    try:
        before = deliverer.deliver_all(events[:third])
        assert [d.status for d in before] == [200] * third
        fault.apply()
        try:
            during = deliverer.deliver_all(events[third : 2 * third])
            health = requests.get(server.url + "/health", timeout=10)
            wait_until(
                lambda: "processor pass failed" in error_log(tmp / "logs"),
                10,
                0.05,
                "the processor to hit the fault",
            )
        finally:
            fault.clear()
        sandbox.faults.latency = 0.0
        # Stripe keeps re-sending every non-2xx: the 503s, then what never came.
        after: list[Delivery] = []
        todo = events[third:]
        rounds = 0
        while todo and rounds < 5:
            rounds += 1
            got = deliverer.deliver_all(todo)
            after += got
            todo = [(d.event_id, d.raw) for d in got if d.status != 200]
    finally:
        deliverer.close()

    statuses = [d.status for d in during]
    assert statuses == [503] * len(during), statuses
    assert all(b'"code":"storage_unavailable"' in d.body for d in during)
    assert todo == []
    # After the fault only lock contention (a 300 ms busy timeout) may still say 503.
    assert {d.status for d in after} <= {200, 503}

    log = error_log(tmp / "logs")
    lines = STORE_ERROR_RE.findall(log)
    refused = [d.event_id for d in [*during, *after] if d.status == 503]
    assert sorted(e for e, _ in lines) == sorted(refused)  # one clear line per 503
    during_reasons = {r for e, r in lines if e in {d.event_id for d in during}}
    # The fault's own reason, and at most lock contention: on a loaded machine a writer
    # slowed by the fault can hold the lock past the 300 ms busy timeout.
    assert during_reasons & set(fault.reasons), during_reasons
    assert during_reasons <= {*fault.reasons, "database is locked"}, during_reasons

    wait_until(lambda: transfers_done(db, sales), 60, 0.05, "every transfer after the fault")
    wait_until(lambda: set(event_statuses(db).values()) == {"processed"}, 30, 0.05, "processed")
    acked = {d.event_id for d in [*before, *after] if d.status == 200}
    assert acked == {e for e, _ in events} == set(event_statuses(db))
    rec = reconcile(db, sandbox, sales)
    assert rec.lost == [] and rec.duplicated == [] and rec.mismatched == []
    assert rec.transfers_at_stripe == n == len(sandbox.state.transfers)
    processor_errors = log.count("processor pass failed")
    assert processor_errors > 0
    print(
        f"\nRESULT storage_{fault.name}: events={len(events)} during_fault={len(during)} "
        f"answered_503={statuses.count(503)} answered_200_during_fault={statuses.count(200)} "
        f"log_lines={len(lines)} reasons={sorted(during_reasons)} "
        f"contention_503_after_fault={len(refused) - len(during)} redelivery_rounds={rounds} "
        f"health_during_fault={health.status_code} processor_pass_errors={processor_errors} "
        f"transfers={rec.transfers_at_stripe} lost={len(rec.lost)} "
        f"duplicated={len(rec.duplicated)}"
    )


# -- database locked ---------------------------------------------------------------------


def locked(db: Path) -> Fault:
    holder: list[sqlite3.Connection] = []

    def apply() -> None:
        conn = sqlite3.connect(db, timeout=10, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")  # WAL: the one write lock, held until rollback
        holder.append(conn)

    def clear() -> None:
        for conn in holder:
            conn.rollback()
            conn.close()
        holder.clear()

    return Fault("locked", apply, clear, ("database is locked",))


@pytest.mark.usefixtures("fast_processor_backoff")
def test_database_locked_longer_than_busy_timeout(
    sandbox: SandboxServer, started: list[GatewayServer], opened: list[Ledger], tmp_path: Path
) -> None:
    run_storage_fault(sandbox, started, opened, tmp_path, tmp_path / "data", locked)


# -- disk full ---------------------------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs as the data dir (root only); skipped where mount is refused."""
    mount_point = tmp_path / "data"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def disk_full(db: Path) -> Fault:
    filler = db.parent / "filler.bin"

    def apply() -> None:
        chunk = b"\0" * (64 * 1024)
        with filler.open("wb") as handle:
            try:
                while True:
                    handle.write(chunk)
                    handle.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        with contextlib.suppress(OSError), filler.open("ab") as handle:
            while True:  # the last few bytes too
                handle.write(b"\0")
                handle.flush()
        assert shutil.disk_usage(db.parent).free < 8192

    def clear() -> None:
        filler.unlink()

    return Fault("disk_full", apply, clear, ("database or disk is full",))


@pytest.mark.usefixtures("fast_processor_backoff")
def test_disk_full(
    sandbox: SandboxServer,
    started: list[GatewayServer],
    opened: list[Ledger],
    tmp_path: Path,
    tiny_tmpfs: Path,
) -> None:
    run_storage_fault(sandbox, started, opened, tmp_path, tiny_tmpfs, disk_full)


# -- read-only data dir --------------------------------------------------------------------


def _chattr(flag: str, paths: list[Path]) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


def read_only(db: Path) -> Fault:
    frozen: list[Path] = []

    def apply() -> None:
        paths = [db.parent, db, db.with_name(db.name + "-wal")]
        _chattr("+i", paths)
        frozen.extend(paths)

    def clear() -> None:
        _chattr("-i", frozen)
        frozen.clear()

    return Fault(
        "read_only", apply, clear, ("disk I/O error", "attempt to write a readonly database")
    )


@pytest.fixture
def chattr_works(tmp_path: Path) -> None:
    probe = tmp_path / "chattr-probe"
    probe.touch()
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("needs chattr and root to make a file immutable")
    try:
        _chattr("+i", [probe])
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"this filesystem has no immutable flag: {exc.stderr!r}")
    _chattr("-i", [probe])


@pytest.mark.usefixtures("fast_processor_backoff", "chattr_works")
def test_read_only_data_dir(
    sandbox: SandboxServer, started: list[GatewayServer], opened: list[Ledger], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    try:
        run_storage_fault(sandbox, started, opened, tmp_path, data, read_only)
    finally:  # never leave an immutable file behind: pytest could not delete tmp_path
        subprocess.run(["chattr", "-R", "-i", str(data)], check=False, capture_output=True)


@pytest.mark.usefixtures("chattr_works")
@pytest.mark.parametrize(
    "logs_elsewhere", [False, True], ids=["logs-in-data-dir", "logs-elsewhere"]
)
def test_headless_gateway_refuses_to_start_on_a_read_only_data_dir(
    sandbox: SandboxServer, tmp_path: Path, logs_elsewhere: bool
) -> None:
    """Started on a read-only data dir, ``ursus-gateway serve`` exits 1 with one clear line."""
    data = tmp_path / "data"
    Ledger.open(f"sqlite:///{data / 'ursus.sqlite3'}").close()
    env = gateway_env(sandbox, tmp_path)
    args = [str(GATEWAY_BIN), "serve", "--data-dir", str(data), "--port", "0"]
    if logs_elsewhere:
        args += ["--log-dir", str(tmp_path / "logs")]
    _chattr("+i", [data, *data.iterdir()])
    try:
        done = subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        subprocess.run(["chattr", "-R", "-i", str(data)], check=False, capture_output=True)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.startswith("ursus-gateway: ")
    assert str(data) in done.stderr  # which folder: the owner has to find it
    print(
        f"\nRESULT storage_read_only_at_start: exit={done.returncode} "
        f"stderr={done.stderr.strip()!r}"
    )
