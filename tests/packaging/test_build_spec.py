"""Fast checks of build.spec (scripts/build_app.sh does the real build) and of the crash handler."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any QApplication exists

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "build.spec"


class _Recorder:
    """Stands in for one of PyInstaller's spec classes; remembers its arguments."""

    calls: dict[str, SimpleNamespace]

    def __init__(self, kind: str, calls: dict[str, SimpleNamespace]) -> None:
        self.kind, self.calls = kind, calls

    def __call__(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        result = SimpleNamespace(args=args, kwargs=kwargs, binaries=[], datas=[], pure=[])
        result.scripts = []
        self.calls[self.kind] = result
        return result


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """build.spec executed with recording stand-ins for Analysis, PYZ, EXE and COLLECT."""
    pytest.importorskip("PyInstaller", reason="pip install -e '.[build]'")
    calls: dict[str, SimpleNamespace] = {}
    namespace: dict[str, Any] = {"SPECPATH": str(ROOT), "__file__": str(SPEC)}
    for kind in ("Analysis", "PYZ", "EXE", "COLLECT"):
        namespace[kind] = _Recorder(kind, calls)
    exec(compile(SPEC.read_text(encoding="utf-8"), str(SPEC), "exec"), namespace)  # noqa: S102
    namespace["calls"] = calls
    return namespace


def _bundled(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """(source file, destination dir) pairs of the Analysis datas, directories expanded."""
    pairs = set()
    for source, dest in spec["calls"]["Analysis"].kwargs["datas"]:
        src = Path(source)
        if src.is_dir():
            for path in src.rglob("*"):
                if path.is_file():
                    pairs.add((str(path), str(Path(dest) / path.parent.relative_to(src))))
        else:
            pairs.add((str(src), dest))
    return pairs


def test_spec_compiles_as_python() -> None:
    code = compile(SPEC.read_text(encoding="utf-8"), str(SPEC), "exec")
    assert "Analysis" in code.co_names and "COLLECT" in code.co_names


def test_one_folder_build_named_ursus_from_the_desktop_entry_point(spec: dict[str, Any]) -> None:
    calls = spec["calls"]
    assert calls["Analysis"].args[0] == [str(ROOT / "ursus_desktop" / "__main__.py")]
    assert calls["EXE"].kwargs["name"] == "ursus"
    assert calls["EXE"].kwargs["exclude_binaries"] is True  # one-folder, not one-file
    assert calls["EXE"].kwargs["console"] is False
    assert calls["COLLECT"].kwargs["name"] == "ursus"


def test_excludes_name_what_ursus_does_not_use(spec: dict[str, Any]) -> None:
    excludes = set(spec["calls"]["Analysis"].kwargs["excludes"])
    for name in (
        "tkinter",
        "numpy",
        "keyrings.alt",
        "PySide6.QtWebEngineCore",
        "PySide6.QtWebEngineWidgets",
        "PySide6.QtQuick",
        "PySide6.QtQml",
        "PySide6.Qt3DCore",
        "PySide6.QtMultimedia",
        "PySide6.QtCharts",
        "PySide6.QtPdf",
        "PySide6.QtBluetooth",
        "PySide6.QtPositioning",
        "PySide6.QtSensors",
        "PySide6.QtSerialPort",
        "PySide6.QtTest",
    ):
        assert name in excludes, name
    # ...and none of what the desktop imports.
    used = {"PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets"}
    assert not used & excludes


def test_every_qt_module_the_desktop_imports_stays(spec: dict[str, Any]) -> None:
    imported = set()
    for path in (ROOT / "ursus_desktop").rglob("*.py"):
        imported |= set(re.findall(r"PySide6\.(Qt\w+)", path.read_text(encoding="utf-8")))
    assert {"QtCore", "QtWidgets"} <= imported
    assert not {f"PySide6.{name}" for name in imported} & set(spec["EXCLUDES"])


def test_datas_include_resources_and_the_sandbox_fixtures(spec: dict[str, Any]) -> None:
    bundled = _bundled(spec)
    # ursus_desktop.resources looks under sys._MEIPASS/resources first.
    assert (str(ROOT / "resources" / "ursus.qss"), "resources") in bundled
    assert (str(ROOT / "resources" / "icons" / "ursus.svg"), "resources/icons") in bundled
    fixtures = sorted((ROOT / "gateway" / "sandbox" / "fixtures").glob("*.json"))
    assert fixtures
    for fixture in fixtures:
        assert (str(fixture), "gateway/sandbox/fixtures") in bundled, fixture.name
    destinations = {dest for _src, dest in bundled}
    assert "stripe/data" in destinations  # ca-certificates.crt, the CA bundle stripe pins
    # Metadata (keyring's entry points, our version): a dist-info, or an egg-info when the
    # checkout's stale ursus.egg-info is first on sys.path.
    metadata = {Path(d).name.split("-")[0].split(".")[0] for d in destinations if "-info" in d}
    assert {"keyring", "ursus"} <= metadata


def test_keyring_backends_are_hidden_imports(spec: dict[str, Any]) -> None:
    hidden = set(spec["calls"]["Analysis"].kwargs["hiddenimports"])
    for backend in ("SecretService", "kwallet", "macOS", "Windows", "chainer", "fail"):
        assert f"keyring.backends.{backend}" in hidden


@pytest.mark.parametrize(
    "dest",
    [
        "libgtk-3.so.0",
        "libgdk-3.so.0",
        "libatk-1.0.so.0",
        "libpango-1.0.so.0",
        "libcairo.so.2",
        "libstdc++.so.6",
        "PySide6/Qt/lib/libQt6Quick.so.6",
        "PySide6/Qt/lib/libQt6Qml.so.6",
        "PySide6/Qt/lib/libQt6Network.so.6",
        "PySide6/Qt/plugins/platformthemes/libqgtk3.so",
        "PySide6/Qt/plugins/platforminputcontexts/libqtvirtualkeyboardplugin.so",
        "PySide6/Qt/plugins/platforms/libqvnc.so",
        "PySide6/Qt/plugins/generic/libqevdevmouseplugin.so",
    ],
)
def test_stray_binaries_are_left_out(spec: dict[str, Any], dest: str) -> None:
    assert spec["is_stray"]((dest, "/build/machine/" + dest, "BINARY"))


@pytest.mark.parametrize(
    "entry",
    [
        ("PySide6/Qt/lib/libQt6Core.so.6", "BINARY"),
        ("PySide6/Qt/lib/libQt6Svg.so.6", "BINARY"),  # the SVG icons
        ("libQt6Gui.so.6", "SYMLINK"),
        ("PySide6/QtWidgets.abi3.so", "EXTENSION"),
        ("PySide6/Qt/plugins/platforms/libqxcb.so", "BINARY"),
        ("PySide6/Qt/plugins/platforms/libqwayland.so", "BINARY"),
        ("PySide6/Qt/plugins/platforms/libqoffscreen.so", "BINARY"),  # --selftest
        ("PySide6/Qt/plugins/imageformats/libqsvg.so", "BINARY"),
        ("PySide6/Qt/plugins/iconengines/libqsvgicon.so", "BINARY"),
        ("libfontconfig.so.1", "BINARY"),
        ("resources/icons/ursus.svg", "DATA"),
        ("gateway/sandbox/fixtures/objects.json", "DATA"),
    ],
)
def test_what_ursus_needs_stays(spec: dict[str, Any], entry: tuple[str, str]) -> None:
    dest, typecode = entry
    assert not spec["is_stray"]((dest, "/src/" + dest, typecode))


def test_qt_translations_are_left_out_as_data(spec: dict[str, Any]) -> None:
    assert spec["is_stray"](("PySide6/Qt/translations/qt_de.qm", "/src/qt_de.qm", "DATA"))


def test_prune_orphans_drops_only_what_dropped_binaries_alone_need(
    spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from PyInstaller.depend import bindepend

    needs = {  # ldd-style: transitive
        "/s/QtGui.abi3.so": {"libQt6Gui.so.6", "libglib-2.0.so.0"},
        "/s/libqgtk3.so": {"libgtk-3.so.0", "libgio-2.0.so.0", "libglib-2.0.so.0"},
        "/s/libQt6Gui.so.6": {"libglib-2.0.so.0"},
        "/s/libgio-2.0.so.0": {"libglib-2.0.so.0"},
        "/s/libglib-2.0.so.0": set(),
        "/s/libctypes-only.so.1": set(),
    }
    monkeypatch.setattr(
        bindepend, "get_imports", lambda src, search_paths=None: {(n, None) for n in needs[src]}
    )
    kept_in = [
        ("PySide6/QtGui.abi3.so", "/s/QtGui.abi3.so", "EXTENSION"),
        ("PySide6/Qt/lib/libQt6Gui.so.6", "/s/libQt6Gui.so.6", "BINARY"),
        ("libgio-2.0.so.0", "/s/libgio-2.0.so.0", "BINARY"),
        ("libglib-2.0.so.0", "/s/libglib-2.0.so.0", "BINARY"),
        ("libctypes-only.so.1", "/s/libctypes-only.so.1", "BINARY"),
    ]
    dropped = [("PySide6/Qt/plugins/platformthemes/libqgtk3.so", "/s/libqgtk3.so", "BINARY")]
    kept, orphans = spec["prune_orphans"](kept_in, dropped)
    assert orphans == {"libgio-2.0.so.0"}
    assert [e[0] for e in kept] == [
        "PySide6/QtGui.abi3.so",
        "PySide6/Qt/lib/libQt6Gui.so.6",
        "libglib-2.0.so.0",  # QtGui needs it too
        "libctypes-only.so.1",  # nothing dropped needed it: may be loaded with ctypes
    ]


# --- ursus_desktop.frozen -------------------------------------------------------------------

CRASHING_APP = """
import sys
from pathlib import Path
from ursus_desktop.frozen import install_crash_handler
install_crash_handler(Path(sys.argv[1]))
raise {exc}
"""


def _run(code: str, log_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "URSUS_LOG_DIR"}
    return subprocess.run(
        [sys.executable, "-c", code, str(log_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_crash_writes_crash_log_redacted_and_exits_non_zero(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    exc = "RuntimeError('ledger gone; key sk_test_51Hcrash0123456789 leaked?')"
    result = _run(CRASHING_APP.format(exc=exc), log_dir)
    from ursus_desktop.frozen import CRASH_EXIT_CODE

    assert result.returncode == CRASH_EXIT_CODE, result.stderr
    text = (log_dir / "crash.log").read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: ledger gone; key [REDACTED] leaked?" in text
    assert "sk_test_51Hcrash" not in text + result.stderr
    assert str(log_dir / "crash.log") in result.stderr


def test_ctrl_c_is_no_crash(tmp_path: Path) -> None:
    from ursus_desktop.frozen import CRASH_EXIT_CODE

    result = _run(CRASHING_APP.format(exc="KeyboardInterrupt"), tmp_path / "logs")
    assert result.returncode not in (0, CRASH_EXIT_CODE)
    assert "KeyboardInterrupt" in result.stderr
    assert not (tmp_path / "logs" / "crash.log").exists()


def test_handler_appends_and_calls_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ursus_desktop import frozen

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    exits: list[int] = []
    frozen.install_crash_handler(tmp_path, exit_process=exits.append)
    for n in (1, 2):
        try:
            raise ValueError(f"crash {n}")
        except ValueError as exc:
            sys.excepthook(type(exc), exc, exc.__traceback__)
    text = (tmp_path / "crash.log").read_text(encoding="utf-8")
    assert exits == [frozen.CRASH_EXIT_CODE] * 2
    assert text.index("ValueError: crash 1") < text.index("ValueError: crash 2")


def test_log_dir_inside_the_bundle_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway import config
    from ursus_desktop import frozen

    bundle = tmp_path / "dist" / "ursus"
    (bundle / "_internal").mkdir(parents=True)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(bundle / "_internal"), raising=False)
    monkeypatch.setattr(sys, "executable", str(bundle / "ursus"))
    monkeypatch.setattr(config.platformdirs, "user_log_dir", lambda *a, **k: str(tmp_path / "u"))
    assert frozen.is_frozen()
    assert frozen.bundle_dir() == bundle / "_internal"
    assert frozen.crash_log_dir(bundle / "logs") == tmp_path / "u"
    assert frozen.crash_log_dir(bundle / "_internal" / "x") == tmp_path / "u"
    assert frozen.crash_log_dir(tmp_path / "elsewhere") == tmp_path / "elsewhere"


def test_from_source_bundle_dir_is_the_checkout() -> None:
    from ursus_desktop import frozen

    assert not frozen.is_frozen()
    assert (frozen.bundle_dir() / "resources" / "ursus.qss").is_file()


def test_dialog_only_where_someone_can_dismiss_it(
    qapp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PySide6.QtWidgets import QApplication, QMessageBox

    from ursus_desktop import frozen

    shown: list[tuple[str, str]] = []
    record = staticmethod(lambda _parent, title, text: shown.append((title, text)))
    monkeypatch.setattr(QMessageBox, "critical", record)
    frozen._show_dialog("offscreen: a modal box would hang the process")
    assert shown == []
    monkeypatch.setattr(QApplication, "platformName", staticmethod(lambda: "xcb"))
    frozen._show_dialog("details")
    assert shown == [("URSUS stopped", "details")]


def test_unwritable_log_dir_falls_back_to_the_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ursus_desktop import frozen

    monkeypatch.setattr(frozen.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    path = frozen.write_crash_log(not_a_dir / "logs", "entry\n")
    assert path == tmp_path / "tmp" / "ursus" / "crash.log"
    assert path.read_text(encoding="utf-8") == "entry\n"
