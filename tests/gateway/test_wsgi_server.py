"""WsgiServer: start, serve, clean stop (DESIGN §7), port in use."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from typing import Any

import pytest
import requests

from gateway.wsgi_server import PatientChannel, PortInUseError, WsgiServer


class SlowApp:
    """Answers /slow only after the test releases it, so a request is provably in flight."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/slow":
            self.entered.set()
            self.release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def _wsgi_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(("waitress", "wsgi", "test-"))}


def test_serves_and_stops_cleanly_with_idle_keepalive_and_in_flight_request() -> None:
    before = _wsgi_threads()
    app = SlowApp()
    server = WsgiServer(app, port=0, name="test-wsgi")
    server.start()
    port = server.port
    assert port > 0 and server.is_running

    session = requests.Session()  # leaves an idle keep-alive connection open
    assert session.get(server.url, timeout=5).text == "ok"

    result: dict[str, str] = {}
    slow = threading.Thread(
        target=lambda: result.setdefault(
            "body", requests.get(server.url + "/slow", timeout=10).text
        )
    )
    slow.start()
    assert app.entered.wait(5)

    stopper = threading.Thread(target=server.stop)
    stopper.start()
    # The in-flight request is still being served: stop() waits for it.
    stopper.join(0.3)
    assert stopper.is_alive()
    app.release.set()
    stopper.join(10)
    slow.join(10)
    assert not stopper.is_alive()
    assert result["body"] == "ok"  # the in-flight request finished
    assert not server.is_running
    assert server.port == 0
    assert _wsgi_threads() == before  # no worker or loop thread left behind
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
    session.close()

    again = WsgiServer(app, port=port, name="test-wsgi")  # port reusable at once
    again.start()
    try:
        assert requests.get(again.url, timeout=5).text == "ok"
    finally:
        again.stop()


def test_port_in_use_is_a_clear_error_and_leaks_no_threads() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = set(threading.enumerate())
        with pytest.raises(PortInUseError) as info:
            WsgiServer(SlowApp(), port=port).start()
        assert str(port) in str(info.value) and "already in use" in str(info.value)
        assert set(threading.enumerate()) == before


def test_stop_is_idempotent_and_start_twice_refused() -> None:
    server = WsgiServer(SlowApp(), port=0)
    server.start()
    with pytest.raises(RuntimeError):
        server.start()
    server.stop()
    server.stop()
    assert not server.is_running


# -- PatientChannel: the loop does not spin while a task flushes -----------------------


def _channel_state(requests_in_flight: int, unsent: int) -> PatientChannel:
    """A PatientChannel with just the state writable() reads (no socket needed)."""
    channel = PatientChannel.__new__(PatientChannel)
    channel.requests = [object()] * requests_in_flight
    channel.total_outbufs_len = unsent
    channel.will_close = False
    channel.close_when_flushed = False
    channel.outbuf_lock = threading.Condition()
    return channel


def test_a_channel_whose_task_holds_the_output_lock_is_not_polled_for_writing() -> None:
    channel = _channel_state(requests_in_flight=1, unsent=100)
    holding, done = threading.Event(), threading.Event()

    def task() -> None:
        with channel.outbuf_lock:
            holding.set()
            done.wait(5)

    worker = threading.Thread(target=task)
    worker.start()
    try:
        assert holding.wait(5)
        assert not channel.writable()  # the task flushes; it pulls the trigger if it must
    finally:
        done.set()
        worker.join(5)
    assert channel.writable()  # lock free, data left: the loop flushes it


def test_a_channel_with_output_and_no_task_is_writable() -> None:
    assert _channel_state(requests_in_flight=0, unsent=100).writable()
    assert not _channel_state(requests_in_flight=0, unsent=0).writable()


def big_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """A response far larger than a socket buffer: flushing must resume when it drains."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    if environ["PATH_INFO"] == "/one":
        return [b"x" * (8 * 1024 * 1024)]
    return (bytes([65 + i % 26]) * 65536 for i in range(128))  # streamed, 8 MiB


@pytest.mark.parametrize("path", ["/one", "/stream"])
def test_large_responses_arrive_whole(path: str) -> None:
    server = WsgiServer(big_app, port=0, name="test-big")
    server.start()
    try:
        with requests.Session() as session:
            for _ in range(2):  # twice on one keep-alive connection
                body = session.get(server.url + path, timeout=30).content
                assert len(body) == 8 * 1024 * 1024
                if path == "/stream":
                    assert body[65536 * 27 : 65536 * 27 + 1] == b"B"
    finally:
        server.stop()
