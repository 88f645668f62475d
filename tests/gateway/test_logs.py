"""Log files: formats, redaction on every handler, rotation settings, teardown."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path

import pytest
from events import WEBHOOK_SECRET, delivery_headers, fixture
from fakes import API_KEY, STRIPE_KEY, FakeLedger, FakeStripe, make_config

from gateway.app import create_app
from gateway.logs import (
    BufferedRotatingFileHandler,
    LogFiles,
    RedactingFilter,
    redact,
    secrets_regex,
    setup_logging,
)

SECRETS = (STRIPE_KEY, WEBHOOK_SECRET, API_KEY)
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[LogFiles]:
    files = setup_logging(tmp_path / "logs", secrets=SECRETS)
    yield files
    files.teardown()


def flush(files: LogFiles) -> None:
    files.flush()  # the access log would write its block within a second anyway


def test_files_are_created_with_daily_utc_rotation_kept_14_days(logs: LogFiles) -> None:
    assert logs.access_log.name == "access.log" and logs.error_log.name == "error.log"
    file_handlers = {h for _, h in logs.handlers if isinstance(h, TimedRotatingFileHandler)}
    assert len(file_handlers) == 2
    for handler in file_handlers:
        assert (handler.when, handler.backupCount, handler.utc) == ("MIDNIGHT", 14, True)
        assert handler.encoding == "utf-8"
        assert any(isinstance(f, RedactingFilter) for f in handler.filters)


def test_access_lines_are_written_in_blocks_within_the_interval(tmp_path: Path) -> None:
    handler = BufferedRotatingFileHandler(tmp_path / "access.log", interval=0.05)
    slow = BufferedRotatingFileHandler(tmp_path / "slow.log", interval=60)
    try:
        for h in (handler, slow):
            h.handle(logging.makeLogRecord({"msg": "GET / 200"}))
        assert (tmp_path / "slow.log").read_text("utf-8") == ""  # no write() per line
        deadline = time.monotonic() + 5
        while (tmp_path / "access.log").read_text("utf-8") != "GET / 200\n":
            assert time.monotonic() < deadline, "the block was never written"
            time.sleep(0.01)
    finally:
        handler.close()
        slow.close()
    assert (tmp_path / "slow.log").read_text("utf-8") == "GET / 200\n"  # close writes it
    for timer in [t for t in threading.enumerate() if t.name == "access-log-flush"]:
        timer.join(5)  # a cancelled timer ends at once
        assert not timer.is_alive()


def test_teardown_writes_the_pending_access_lines(tmp_path: Path) -> None:
    files = setup_logging(tmp_path / "logs")
    logging.getLogger("gateway.access").info("%s %s", "127.0.0.1", "GET / 200")
    files.teardown()
    assert files.access_log.read_text("utf-8").endswith("127.0.0.1 GET / 200\n")


def test_error_log_line_format_is_greppable(logs: LogFiles) -> None:
    logging.getLogger("gateway.app").error("Invalid API key attempt from %s", "1.2.3.4")
    logging.getLogger("waitress").warning("Task queue depth is %d", 5)
    logging.getLogger("gateway.processor").info("transfer created")
    logging.getLogger("gateway.processor").debug("too chatty")
    flush(logs)
    lines = logs.error_log.read_text("utf-8").splitlines()
    assert len(lines) == 3  # INFO is the audit trail; DEBUG stays out
    assert re.fullmatch(
        rf"{STAMP} ERROR gateway\.app Invalid API key attempt from 1\.2\.3\.4", lines[0]
    )
    assert re.fullmatch(rf"{STAMP} WARNING waitress Task queue depth is 5", lines[1])
    assert re.fullmatch(rf"{STAMP} INFO gateway\.processor transfer created", lines[2])
    assert "transfer created" not in logs.access_log.read_text("utf-8")


def test_fail2ban_style_regex_finds_the_client(logs: LogFiles) -> None:
    client = create_app(make_config(), FakeLedger(), FakeStripe()).test_client()
    client.post(
        "/create-payment-intent",
        json={"amount": 100, "order_id": "o1"},
        headers={"X-API-Key": "nope-nope-nope-nope", "CF-Connecting-IP": "203.0.113.66"},
    )
    flush(logs)
    # fail2ban: failregex = ^\S+ ERROR gateway\.app Invalid API key attempt from <HOST>$
    found = re.findall(
        r"^\S+ ERROR gateway\.app Invalid API key attempt from (\S+)$",
        logs.error_log.read_text("utf-8"),
        re.MULTILINE,
    )
    assert found == ["203.0.113.66"]
    assert "nope-nope" not in logs.error_log.read_text("utf-8")


def test_access_log_has_one_line_per_request(logs: LogFiles) -> None:
    client = create_app(make_config(), FakeLedger(), FakeStripe()).test_client()
    body = fixture("charge_succeeded")
    client.post("/webhook", data=body, headers=delivery_headers(body))
    client.get("/health", headers={"CF-Connecting-IP": "198.51.100.8"})
    # A log-injection attempt: a decoded path carrying a newline and a forged line.
    client.get("/x", environ_overrides={"PATH_INFO": "/no where\nFAKE 1.1.1.1 GET / 200"})
    flush(logs)
    lines = logs.access_log.read_text("utf-8").splitlines()
    assert len(lines) == 3
    assert re.fullmatch(rf"{STAMP} 127\.0\.0\.1 POST /webhook 200 17 \d+\.\d\d", lines[0])
    assert re.fullmatch(rf"{STAMP} 198\.51\.100\.8 GET /health 200 \d+ \d+\.\d\d", lines[1])
    assert re.fullmatch(
        rf"{STAMP} 127\.0\.0\.1 GET /no%20where%0AFAKE%201\S+ 404 \d+ \S+", lines[2]
    )
    # Requests do not end up in error.log.
    assert logs.error_log.read_text("utf-8").count("POST /webhook") == 0


@pytest.mark.parametrize(
    ("message", "args"),
    [
        ("key is %s", (STRIPE_KEY,)),
        (f"key is {STRIPE_KEY}", ()),
        ("webhook secret %s", (WEBHOOK_SECRET,)),
        ("api key %r", (API_KEY,)),
        ("unconfigured live key %s", ("sk_live_51AbCdEfGh",)),
        ("restricted %s", ("rk_test_Zyx987",)),
        ("masked by stripe %s", ("sk_test_****1234",)),
        ("other secret %s", ("whsec_OtherSecret42",)),
    ],
)
def test_secrets_are_redacted_in_messages_and_arguments(
    logs: LogFiles, message: str, args: tuple[str, ...]
) -> None:
    logging.getLogger("gateway.stripe_api").error(message, *args)
    flush(logs)
    text = logs.error_log.read_text("utf-8")
    assert "[REDACTED]" in text
    for value in (*SECRETS, *args):
        assert value not in text


def test_secrets_in_tracebacks_are_redacted(logs: LogFiles) -> None:
    try:
        raise ValueError(f"bad key {STRIPE_KEY}")
    except ValueError:
        logging.getLogger("gateway.cli").exception("failed with %s", API_KEY)
    flush(logs)
    text = logs.error_log.read_text("utf-8")
    assert "Traceback" in text and "ValueError: bad key [REDACTED]" in text
    assert STRIPE_KEY not in text and API_KEY not in text


def test_access_log_is_redacted_too(logs: LogFiles) -> None:
    client = create_app(make_config(), FakeLedger(), FakeStripe()).test_client()
    client.get(f"/leak/{API_KEY}")
    flush(logs)
    text = logs.access_log.read_text("utf-8")
    assert "/leak/[REDACTED]" in text and API_KEY not in text


def test_console_output_is_redacted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = setup_logging(tmp_path, secrets=SECRETS, console=True, level=logging.INFO)
    try:
        logging.getLogger("gateway.service").info("started with %s", STRIPE_KEY)
    finally:
        files.teardown()
    err = capsys.readouterr().err
    assert "INFO gateway.service started with [REDACTED]" in err
    assert STRIPE_KEY not in err


def test_teardown_removes_everything_and_setup_can_repeat(tmp_path: Path) -> None:
    before = {
        name: list(logging.getLogger(name).handlers)
        for name in ("gateway", "waitress", "gateway.access")
    }
    propagate = logging.getLogger("gateway.access").propagate
    for run in range(3):
        files = setup_logging(tmp_path / str(run), secrets=SECRETS)
        logging.getLogger("gateway.x").warning("run %d", run)
        files.teardown()
        assert files.handlers == []
    for name, handlers in before.items():
        assert logging.getLogger(name).handlers == handlers
    assert logging.getLogger("gateway.access").propagate == propagate
    # Each run wrote only its own line (no handler left over from an earlier run).
    assert (tmp_path / "2" / "error.log").read_text("utf-8").count("\n") == 1


def test_redact_helpers() -> None:
    pattern = secrets_regex(["my-long-api-key-value", ""])
    assert redact("x my-long-api-key-value y", pattern) == "x [REDACTED] y"
    assert redact("sk_test_abc whsec_def rk_live_x", pattern) == "[REDACTED] [REDACTED] [REDACTED]"
    assert redact("pk_test_public is fine") == "pk_test_public is fine"
    assert redact("no secrets here") == "no secrets here"
