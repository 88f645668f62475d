"""Shared helpers of the benchmarks: loopback load generator, percentiles, RSS, sandbox process.

The load generator is one epoll loop over N persistent keep-alive connections
sending pre-built raw HTTP requests; run in its own process (``LoadClient``) it
costs ~20 us of CPU per request, so on 2 cores it is not what limits a Python
server. A Stripe stand-in runs in another process (``SandboxProcess``) like the
real Stripe would: its work never competes for the gateway's GIL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import multiprocessing
import os
import platform
import select
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIXTURE = ROOT / "tests" / "data" / "charge_succeeded.json"
OUT_DIR = Path(__file__).resolve().parent / "out"
LEDGER_1M = OUT_DIR / "ledger-1000000.sqlite3"  # shared with bench_export.py

# -- machine, memory, statistics ------------------------------------------------------------


def machine() -> str:
    """One line naming the machine the figures come from."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) // 1024 // 1024} GiB RAM"
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({model or platform.machine()}){mem}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}"
    )


def load_average() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every figure."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds a process used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kb(field: str, pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size now, MiB."""
    return _status_kb("VmRSS", pid) / 1024


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident set size so far (VmHWM), MiB."""
    return _status_kb("VmHWM", pid) / 1024


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``condition`` until true or ``timeout`` seconds passed; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# -- the load generator ---------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class LoadResult:
    """One run of the load generator."""

    wall: float  # first send to last response, seconds
    latencies: list[float]  # per request, seconds (send -> whole response read)
    statuses: Counter[int]
    client_cpu: float  # CPU seconds the generator itself used
    errors: int = 0  # connections lost mid-request

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0

    def p(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        return percentile(self.latencies, q) * 1000


class _Conn:
    __slots__ = ("buf", "busy", "out", "sent_at", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.out: memoryview | None = None
        self.sent_at = 0.0
        self.busy = False


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def _response_done(buf: bytearray) -> tuple[int, int] | None:
    """(status, total length) once ``buf`` holds a whole response with Content-Length."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    at = head.find(b"\r\ncontent-length:")
    length = 0
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
    total = end + 4 + length
    return (status, total) if len(buf) >= total else None


def run_load(
    host: str,
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    *,
    rate: float | None = None,
    timeout: float = 120.0,
) -> LoadResult:
    """Send every request once over ``concurrency`` keep-alive connections; one epoll loop.

    Each connection has one request in flight (no pipelining). With ``rate``
    (requests/s) request i is not sent before start + i/rate (an open loop, for
    bursts); without it each connection sends its next request as soon as the
    previous answer is in (a closed loop, for throughput).
    """
    cpu0 = time.process_time()
    conns: dict[int, _Conn] = {}
    epoll = select.epoll()
    for _ in range(min(concurrency, len(requests))):
        sock = _connect(host, port)
        conns[sock.fileno()] = _Conn(sock)
        epoll.register(sock.fileno(), 0)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    index = 0
    total = len(requests)
    idle: list[int] = []  # connections waiting for the next paced send
    start = time.perf_counter()

    def send_next(fd: int) -> None:
        nonlocal index
        conn = conns[fd]
        if index >= total:
            conn.busy = False
            return
        if rate is not None and time.perf_counter() < start + index / rate:
            conn.busy = False
            idle.append(fd)
            return
        request = requests[index]
        index += 1
        conn.busy = True
        conn.sent_at = time.perf_counter()
        try:
            sent = conn.sock.send(request)
        except BlockingIOError:
            sent = 0
        if sent < len(request):
            conn.out = memoryview(request)[sent:]
            epoll.modify(fd, select.EPOLLOUT)
        else:
            epoll.modify(fd, select.EPOLLIN)

    for fd in list(conns):
        send_next(fd)
    deadline = time.monotonic() + timeout
    while len(latencies) + errors < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"load: {len(latencies)} of {total} answered in {timeout:.0f} s")
        wait = 1.0
        if idle and rate is not None:
            wait = max(0.0, start + index / rate - time.perf_counter())
        for fd, mask in epoll.poll(wait):
            conn = conns[fd]
            if mask & select.EPOLLOUT and conn.out is not None:
                sent = conn.sock.send(conn.out)
                conn.out = conn.out[sent:] if sent < len(conn.out) else None
                if conn.out is None:
                    epoll.modify(fd, select.EPOLLIN)
                continue
            try:
                data = conn.sock.recv(65536)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    continue
                data = b""
            if not data:  # the server closed: count it, reconnect, carry on
                errors += 1
                epoll.unregister(fd)
                conn.sock.close()
                del conns[fd]
                sock = _connect(host, port)
                conns[sock.fileno()] = _Conn(sock)
                epoll.register(sock.fileno(), 0)
                send_next(sock.fileno())
                continue
            conn.buf += data
            done = _response_done(conn.buf)
            if done is None:
                continue
            latencies.append(time.perf_counter() - conn.sent_at)
            statuses[done[0]] += 1
            del conn.buf[: done[1]]
            send_next(fd)
        if idle and rate is not None:
            due, idle[:] = idle[:], []
            for fd in due:
                send_next(fd)
    wall = time.perf_counter() - start
    for conn in conns.values():
        conn.sock.close()
    epoll.close()
    return LoadResult(wall, latencies, statuses, time.process_time() - cpu0, errors)


class LoadClient:
    """The load generator in its own process (spawned: no copy of the server's threads)."""

    def __init__(self) -> None:
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self._pool.submit(time.sleep, 0).result()  # started and imported before any timing

    def run(
        self,
        host: str,
        port: int,
        requests: Sequence[bytes],
        concurrency: int,
        *,
        rate: float | None = None,
    ) -> LoadResult:
        future = self._pool.submit(run_load, host, port, list(requests), concurrency, rate=rate)
        return future.result()

    def close(self) -> None:
        self._pool.shutdown()

    def __enter__(self) -> LoadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- signed webhook requests -------------------------------------------------------------------


def charge_event_template() -> dict[str, Any]:
    """The committed ``charge.succeeded`` fixture (a 4 KB event, as Stripe sends it)."""
    data: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return data


def event_body(template: dict[str, Any], event_id: str, charge_id: str) -> bytes:
    """The fixture with a unique event id and the given charge, pretty-printed like Stripe."""
    event = dict(template)
    event["id"] = event_id
    event["created"] = int(time.time())
    obj = dict(event["data"]["object"])
    obj["id"] = charge_id
    event["data"] = {**event["data"], "object": obj}
    return json.dumps(event, indent=2).encode("utf-8")


def webhook_request(
    host: str, port: int, body: bytes, secret: str, path: str = "/webhook"
) -> bytes:
    """A raw HTTP/1.1 keep-alive POST of ``body`` signed with ``secret`` now."""
    from gateway.sandbox.webhooks import sign

    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Stripe-Signature: {sign(body, secret)}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


# -- a Stripe stand-in in its own process ---------------------------------------------------------


def _sale(state: Any, amount: int, currency: str) -> str:
    """One captured card sale made directly in a SandboxState (no HTTP); the charge id."""
    order = f"order_{time.perf_counter_ns():x}"
    pi = state.create_payment_intent(
        {
            "amount": amount,
            "currency": currency,
            "transfer_group": order,
            "metadata": {"order_id": order},
            "confirm": True,
            "payment_method": "pm_card_visa",
        }
    )
    return str(pi["latest_charge"])


def _sandbox_main(conn: Any, webhook_url: str | None) -> None:
    from gateway.sandbox import SandboxServer

    sandbox = SandboxServer.generated(webhook_url=webhook_url)
    sandbox.start()
    conn.send(
        (sandbox.url, sandbox.secret_key, sandbox.webhook_secret, sandbox.connected_account_id)
    )
    state = sandbox.state
    try:
        while True:
            command, args = conn.recv()
            if command == "stop":
                break
            if command == "charges":  # n silent charges (no webhook url while making them)
                n, amount, currency = args
                url, state.webhook_url = state.webhook_url, None
                try:
                    conn.send([_sale(state, amount, currency) for _ in range(n)])
                finally:
                    state.webhook_url = url
                with state.lock:  # nobody will list these events: keep the memory flat
                    for event in state.events:
                        state.events_by_id.pop(event["id"], None)
                        state.delivery_success.pop(event["id"], None)
                    state.events.clear()
            elif command == "sale":  # one sale whose webhooks go out as Stripe's would
                started = time.time()
                conn.send((_sale(state, *args), started))
            elif command == "webhook_url":
                state.webhook_url = args
                conn.send(None)
            elif command == "wait_idle":
                conn.send(sandbox.wait_idle(args))
            elif command == "transfers":
                with state.lock:
                    conn.send(len(state.transfers))
    finally:
        sandbox.stop()
        conn.close()


class SandboxProcess:
    """``gateway.sandbox.SandboxServer`` in a spawned process, driven over a pipe."""

    def __init__(self, webhook_url: str | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(
            target=_sandbox_main, args=(child, webhook_url), name="bench-sandbox", daemon=True
        )
        self._process.start()
        child.close()
        self.url, self.secret_key, self.webhook_secret, self.account = self._conn.recv()

    @property
    def pid(self) -> int:
        return int(self._process.pid or 0)

    def _call(self, command: str, args: object = None) -> Any:
        self._conn.send((command, args))
        return self._conn.recv()

    def charges(self, n: int, amount: int = 10000, currency: str = "usd") -> list[str]:
        """Make ``n`` captured charges (balance transaction attached) without webhooks."""
        ids: list[str] = []
        while len(ids) < n:  # in slices: the pipe stays responsive
            ids += self._call("charges", (min(2000, n - len(ids)), amount, currency))
        return ids

    def sale(self, amount: int = 10000, currency: str = "usd") -> tuple[str, float]:
        """One sale whose events are delivered to the webhook URL; (charge id, epoch started)."""
        result: tuple[str, float] = self._call("sale", (amount, currency))
        return result

    def set_webhook_url(self, url: str | None) -> None:
        self._call("webhook_url", url)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        return bool(self._call("wait_idle", timeout))

    def transfers(self) -> int:
        return int(self._call("transfers"))

    def stop(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(EOFError, BrokenPipeError):
                self._call("stop")
        self._process.join(15)
        self._conn.close()

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def gateway_config(data_dir: Path, sandbox: SandboxProcess) -> Any:
    """A live-shaped (non-sandbox) GatewayConfig that talks to ``sandbox`` as its Stripe."""
    from gateway.config import GatewayConfig, Secrets, Settings

    settings = dataclasses.replace(
        Settings(), host="127.0.0.1", port=0, stripe_api_base=sandbox.url
    )
    return GatewayConfig(
        secrets=Secrets(
            stripe_secret_key=sandbox.secret_key,
            webhook_secrets=(sandbox.webhook_secret,),
            connected_account_id=sandbox.account,
            api_keys=("bench-api-key-" + os.urandom(8).hex(),),
        ),
        settings=settings,
        data_dir=data_dir / "data",
        log_dir=data_dir / "logs",
    )


def pending_work(ledger: Any) -> int:
    """Inbox events still pending plus transfers not yet made (0: the processor is idle)."""
    counts = ledger.counts()
    return int(counts.pending_events) + int(counts.pending_transfers)


# -- the desktop window, offscreen ------------------------------------------------------------


def desktop_env(tmp: Path) -> None:
    """Offscreen Qt and every URSUS folder (data, config, logs, QSettings) under ``tmp``.

    Call before the first Qt import. The keyring is never touched: the benches do
    not call ``load_secrets``.
    """
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    for name in ("data", "config", "logs", "qsettings"):
        (tmp / name).mkdir(parents=True, exist_ok=True)
    os.environ["URSUS_DATA_DIR"] = str(tmp / "data")
    os.environ["URSUS_CONFIG_DIR"] = str(tmp / "config")
    os.environ["URSUS_LOG_DIR"] = str(tmp / "logs")
    from PySide6.QtCore import QSettings

    from ursus_desktop.app import set_identity

    set_identity()
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp / "qsettings"))


def open_window(
    tmp: Path, sandbox: SandboxProcess, app_name: str = "ursus"
) -> tuple[Any, Any, Any]:
    """The app's QApplication, controller and shown main window over a sandbox process.

    Settings point the gateway at the sandbox; the secrets are set as if read from
    the keyring (the benches never touch the real one). The ledger is open, the
    gateway not started. Call ``desktop_env(tmp)`` first.
    """
    from gateway.config import Secrets, Settings, save_settings
    from ursus_desktop.app import make_application
    from ursus_desktop.controller import GatewayController
    from ursus_desktop.main_window import MainWindow

    app = make_application([app_name])
    config_path = tmp / "config" / "settings.json"
    save_settings(config_path, dataclasses.replace(Settings(), port=0, stripe_api_base=sandbox.url))
    controller = GatewayController(
        config_path=config_path, data_dir=tmp / "data", log_dir=tmp / "logs"
    )
    controller.secrets = Secrets(
        stripe_secret_key=sandbox.secret_key,
        webhook_secrets=(sandbox.webhook_secret,),
        connected_account_id=sandbox.account,
        api_keys=("bench-api-key-0123456789",),
    )
    controller.secrets_known = True
    window = MainWindow(controller, tray=False, first_run_prompt=False)
    window.show()
    controller.open_ledger()
    process_events_until(lambda: controller.ledger is not None, 10)
    return app, controller, window


def process_events_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Run the Qt event loop until ``condition`` holds (or ``timeout`` seconds)."""
    from PySide6.QtCore import QCoreApplication, QEventLoop

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 5)
    return True
