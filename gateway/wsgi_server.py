"""A waitress server on a background thread that can be stopped cleanly.

This is the only module that touches waitress internals (DESIGN §7), which is
why pyproject.toml pins waitress to 3.0.x. A bare ``server.close()`` is not a
clean stop: worker threads keep running and an idle keep-alive connection keeps
the asyncore loop alive. The stop sequence here is:

1. close the listening socket from inside the loop thread (a trigger thunk), so
   no new connection is accepted and the port is free at once;
2. wait (bounded) until no channel has a request in flight or unsent output;
3. close every remaining channel and the trigger from the loop thread, which
   empties the socket map and ends ``asyncore.loop``;
4. shut the task dispatcher down and join the loop thread.

It also serves connections with ``PatientChannel``, which stops waitress's
event loop from spinning while a worker thread is writing a response (see there).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ThreadedTaskDispatcher

log = logging.getLogger(__name__)

WsgiApp = Callable[..., Any]


class PortInUseError(OSError):
    """The requested host:port is already taken by another program."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            errno.EADDRINUSE,
            f"Port {port} on {host} is already in use. Stop the other program "
            f"or choose another port.",
        )
        self.host = host
        self.port = port


class PatientChannel(HTTPChannel):
    """An HTTPChannel that does not ask the loop to poll for "writable" while a task flushes.

    A worker thread writes its response into the channel's output buffer under
    ``outbuf_lock`` and flushes it to the socket itself (waitress's ``send_bytes``
    is 1). In between, ``total_outbufs_len`` is non-zero, so stock ``writable()``
    makes the event loop poll for POLLOUT, which a socket with room answers at
    once; ``handle_write`` then fails to take the lock and the loop polls again.
    Each ``poll()`` drops and retakes the GIL, so the loop thread keeps winning it
    back while the worker that holds the lock waits for the GIL to send: measured
    20 to 800 loop iterations per webhook request instead of ~2, the loop thread
    holding the GIL half the time, and throughput falling 2 to 5 times under load.

    While a task holds the lock, the task owns the flush: it sends what it wrote,
    and if the socket would not take it all it pulls the trigger, as it does when it
    ends, which wakes the loop to look again. So only then is "writable" withheld.
    """

    def writable(self) -> bool:
        if self.requests and self.total_outbufs_len and not self.will_close:
            if not self.outbuf_lock.acquire(blocking=False):
                return False  # the task is flushing; it pulls the trigger if it must
            self.outbuf_lock.release()
        return bool(super().writable())


class WsgiServer:
    """Serve a WSGI app with waitress on a daemon thread; ``stop()`` is clean."""

    def __init__(
        self,
        app: WsgiApp,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        threads: int = 8,
        name: str = "wsgi",
        max_request_body_size: int = 1 << 20,
        connection_limit: int = 200,
    ) -> None:
        self._app = app
        self._host = host
        self._requested_port = port
        self._threads = threads
        self._name = name
        self._max_body = max_request_body_size
        self._connection_limit = connection_limit
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for); 0 when stopped."""
        server = self._server
        return int(server.effective_port) if server is not None else 0

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind and start serving; raises PortInUseError if the port is taken."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError(f"{self._name} server is already running")
            # We bind the socket ourselves: waitress would otherwise leak its worker
            # threads and the half-made socket when the port is taken. Its own
            # dispatcher gets threads only once everything is bound.
            sock = _bind(self._host, self._requested_port)
            dispatcher = ThreadedTaskDispatcher()
            try:
                server = create_server(
                    self._app,
                    _dispatcher=dispatcher,
                    sockets=[sock],
                    ident="ursus",
                    # Tracebacks never reach a client (STYLE §8).
                    expose_tracebacks=False,
                    max_request_body_size=self._max_body,
                    connection_limit=self._connection_limit,
                    # The app decides client addresses itself (trusted_proxies),
                    # so waitress must not strip or rewrite forwarding headers.
                    clear_untrusted_proxy_headers=False,
                    asyncore_use_poll=True,
                )
            except BaseException:
                sock.close()
                raise
            assert isinstance(server, BaseWSGIServer)  # one listen socket
            server.channel_class = PatientChannel
            dispatcher.set_thread_count(self._threads)
            self._server = server
            self._thread = threading.Thread(
                target=self._run, args=(server,), name=f"{self._name}-loop", daemon=True
            )
            self._thread.start()
            log.info("%s server listening on %s", self._name, self.url)

    @staticmethod
    def _run(server: BaseWSGIServer) -> None:
        try:
            server.run()
        except Exception:  # pragma: no cover - waitress loop failure is a bug
            log.exception("waitress loop crashed")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (bounded), free everything."""
        with self._lock:
            server, thread = self._server, self._thread
            if server is None or thread is None:
                return
            deadline = time.monotonic() + timeout
            closed = threading.Event()

            def close_listener() -> None:
                server.accepting = False
                wasyncore.dispatcher.close(server)  # listening socket only
                closed.set()

            server.trigger.pull_trigger(close_listener)
            closed.wait(max(0.0, deadline - time.monotonic()))

            while time.monotonic() < deadline and _busy_channels(server):
                time.sleep(0.01)

            def close_all() -> None:
                for channel in list(server._map.values()):
                    if channel is not server.trigger:
                        channel.close()
                server.trigger.close()

            server.trigger.pull_trigger(close_all)
            thread.join(max(0.1, deadline - time.monotonic()))
            server.task_dispatcher.shutdown(timeout=max(0.1, deadline - time.monotonic()))
            if thread.is_alive():  # pragma: no cover - only if waitress changed
                log.error("%s server loop did not stop within %.1fs", self._name, timeout)
            self._server = None
            self._thread = None
            log.info("%s server stopped", self._name)


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket bound to host:port, or PortInUseError."""
    family, socktype, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, socktype, proto)
    try:
        if os.name == "posix":  # TIME_WAIT must not block a restart on the same port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port) from exc
        raise
    return sock


def _busy_channels(server: BaseWSGIServer) -> int:
    """Channels with a request being served or output not yet flushed."""
    busy = 0
    for channel in list(server._map.values()):
        if channel is server.trigger or channel is server:
            continue
        if getattr(channel, "requests", None) or getattr(channel, "total_outbufs_len", 0):
            busy += 1
    return busy
