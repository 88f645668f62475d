"""Entry point, resources, logs tail, selftest and the real Secret Service round trip."""

from __future__ import annotations

import os
import re
from pathlib import Path

import keyring
import pytest
from desktop_helpers import TEST_SECRETS

from ursus_desktop import resources
from ursus_desktop.__main__ import main
from ursus_desktop.app import display_problem
from ursus_desktop.logs_view import LogsView, LogTail, line_level
from ursus_desktop.secret_store import SecretStore


def test_resources_resolve_from_the_checkout() -> None:
    assert resources.path("ursus.qss").read_text(encoding="utf-8").startswith("/*")
    assert resources.path("icons/ursus.svg").is_file()
    with pytest.raises(FileNotFoundError):
        resources.path("icons/nope.svg")


def test_no_display_on_linux_says_so_and_shows_a_sandbox_sale(monkeypatch, capsys) -> None:
    assert "ursus-gateway serve --sandbox" in display_problem({}, "linux")
    assert display_problem({"DISPLAY": ":0"}, "linux") == ""
    assert display_problem({}, "win32") == ""
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "needs a graphical display" in out and "ursus-gateway serve --sandbox" in out
    assert "POST /create-payment-intent" in out
    assert "Stripe fee 3.20 (actual), commission 0.97, vendor 95.83" in out
    assert re.search(r"transfer tr_\w+ created to the vendor's account acct_sandbox", out)


def test_selftest_drives_one_sandbox_sale(capsys) -> None:
    assert main(["--selftest"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("selftest ok:")
    assert "fee 320, commission 97, transfer 9583" in out


def test_log_tail_follows_appends_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("2026-01-01T00:00:00Z INFO gateway a\n2026-01-01T00:00:01Z ERROR gateway b\n")
    tail = LogTail(log)
    assert [line_level(x) for x in tail.read_new()] == ["INFO", "ERROR"]
    with log.open("a") as f:
        f.write("2026-01-01T00:00:02Z WARNING gateway c\npartial")
    assert tail.read_new() == ["2026-01-01T00:00:02Z WARNING gateway c"]
    log.unlink()
    log.write_text("new file\n")
    assert tail.read_new() == ["new file"]


def test_logs_view_filters_by_level(qtbot, tmp_path: Path) -> None:
    (tmp_path / "error.log").write_text(
        "2026-01-01T00:00:00Z INFO gateway started\n2026-01-01T00:00:01Z ERROR gateway boom\n"
    )
    view = LogsView(tmp_path)
    qtbot.addWidget(view)
    assert "started" in view.text.toPlainText()
    view.level.setCurrentText("ERROR")
    assert "started" not in view.text.toPlainText()
    assert "boom" in view.text.toPlainText()


@pytest.mark.secret_service
@pytest.mark.skipif(
    os.environ.get("URSUS_TEST_SECRET_SERVICE") != "1",
    reason="needs a real Secret Service (URSUS_TEST_SECRET_SERVICE=1 under dbus-run-session)",
)
def test_secrets_round_trip_through_the_real_secret_service(memory_keyring) -> None:
    from keyring.backends import SecretService

    keyring.set_keyring(SecretService.Keyring())
    store = SecretStore(service="ursus-test")
    try:
        store.save(TEST_SECRETS)
        assert store.load() == TEST_SECRETS
    finally:
        store.save(type(TEST_SECRETS)())
    assert store.is_empty()
