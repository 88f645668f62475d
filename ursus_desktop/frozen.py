"""Frozen-app (PyInstaller) helpers: where bundled files are, and a crash handler that leaves a log.

A windowed app that dies of an uncaught exception just vanishes (no console, stderr goes
nowhere on Windows). ``install_crash_handler`` makes it leave ``crash.log`` in the user's log
directory and say so in a dialog first.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from gateway.config import default_log_dir
from gateway.logs import redact

CRASH_LOG = "crash.log"
# EX_SOFTWARE (sysexits.h): an internal error, distinct from usage (2) or selftest (1) failures.
CRASH_EXIT_CODE = 70

ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], object]


def is_frozen() -> bool:
    """Whether this process runs from a PyInstaller bundle."""
    return bool(getattr(sys, "frozen", False)) and hasattr(sys, "_MEIPASS")


def bundle_dir() -> Path:
    """The base of bundled data files: ``sys._MEIPASS`` when frozen, else the source checkout."""
    meipass = getattr(sys, "_MEIPASS", None)
    return Path(meipass) if meipass else Path(__file__).resolve().parent.parent


def _install_dirs() -> list[Path]:
    """The running bundle's own directories (an update replaces them; they may be read-only)."""
    dirs = []
    meipass = getattr(sys, "_MEIPASS", None)
    if meipass:
        dirs.append(Path(meipass).resolve())
    if getattr(sys, "frozen", False):  # one-folder: the executable sits next to _internal/
        dirs.append(Path(sys.executable).resolve().parent)
    return dirs


def is_inside_bundle(path: Path) -> bool:
    """Whether ``path`` lies inside the running bundle's own directories."""
    resolved = path.resolve()
    return any(resolved == d or d in resolved.parents for d in _install_dirs())


def crash_log_dir(log_dir: Path | None = None) -> Path:
    """Where ``crash.log`` goes: ``log_dir`` or platformdirs' log dir, never inside the bundle."""
    chosen = log_dir if log_dir is not None else default_log_dir()
    if is_inside_bundle(chosen):  # e.g. URSUS_LOG_DIR pointing into the install
        chosen = default_log_dir(env={})  # platformdirs' user log dir, ignoring overrides
    return chosen


def format_crash(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> str:
    """One crash.log entry: a UTC time stamp, versions, and the traceback with secrets redacted."""
    from ursus_desktop import __version__

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    details = "".join(traceback.format_exception(exc_type, exc, tb))
    return (
        f"{stamp} ursus {__version__} crashed (frozen={is_frozen()}, {sys.platform}, "
        f"python {sys.version.split()[0]})\n{redact(details)}\n"
    )


def write_crash_log(directory: Path, entry: str) -> Path | None:
    """Append ``entry`` to ``directory/crash.log`` (or to one in the temp dir); the file written."""
    # The user's log dir may be unwritable (full disk, permissions): the temp dir is better
    # than nothing, and the dialog names whichever file was written.
    for candidate in (directory, Path(tempfile.gettempdir()) / "ursus"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            path = candidate / CRASH_LOG
            with path.open("a", encoding="utf-8") as log:
                log.write(entry)
                log.flush()
                os.fsync(log.fileno())
            return path
        except OSError:
            continue
    return None


def _show_dialog(message: str) -> None:
    """A modal error box, if a QApplication with a real screen exists on this (GUI) thread."""
    widgets = sys.modules.get("PySide6.QtWidgets")
    if widgets is None:  # Qt never loaded: there is no window to explain anything in
        return
    app = widgets.QApplication.instance()
    if not isinstance(app, widgets.QApplication):
        return
    # Offscreen (--selftest, CI) nobody could dismiss the box and the process would hang.
    if app.platformName() in {"offscreen", "minimal"}:
        return
    if threading.current_thread() is not threading.main_thread():
        return  # widgets live on the GUI thread only
    # The log is already written: a dialog that fails must not mask the crash with another one.
    with contextlib.suppress(Exception):
        widgets.QMessageBox.critical(None, "URSUS stopped", message)


def install_crash_handler(
    log_dir: Path | None = None, *, exit_process: Callable[[int], object] = os._exit
) -> Path:
    """Route uncaught exceptions to ``crash.log``, a dialog and a non-zero exit; the log's dir.

    Args:
        log_dir: where ``crash.log`` goes (default: platformdirs' user log dir); a directory
            inside the bundle is replaced by the default.
        exit_process: ends the process. ``os._exit`` because PySide6 calls ``sys.excepthook``
            for exceptions raised in slots and then carries on: SystemExit raised from the
            hook would not stop it. Nothing acknowledged is lost by not cleaning up: the
            ledger commits each webhook (WAL, synchronous=FULL) before it answers 200.
    """
    directory = crash_log_dir(log_dir)
    previous: ExceptHook = sys.excepthook

    def handle(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):  # Ctrl-C in a terminal is no crash
            previous(exc_type, exc, tb)
            return
        entry = format_crash(exc_type, exc, tb)
        path = write_crash_log(directory, entry)
        where = str(path) if path else "(no writable log directory)"
        if sys.stderr is not None:  # None in a windowed Windows build
            print(f"{entry}URSUS crashed; details in {where}", file=sys.stderr, flush=True)
        _show_dialog(
            f"URSUS stopped because of an unexpected error ({exc_type.__name__}).\n\n"
            f"The details are in:\n{where}\n\nPlease send that file along when you report "
            "the problem, then start URSUS again."
        )
        if sys.stdout is not None:
            sys.stdout.flush()
        exit_process(CRASH_EXIT_CODE)

    sys.excepthook = handle
    return directory
