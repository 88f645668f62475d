"""Logs tab: the live tail of the gateway's access and error logs, with a level filter."""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import QTimer, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

TAIL_BYTES = 64 * 1024  # what the tab shows of a big file when it opens
MAX_LINES = 5000
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LEVEL_RE = re.compile(r"^\S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
LOG_FILES = {"Error log": "error.log", "Access log": "access.log"}


def line_level(line: str) -> str:
    """The level of a gateway log line; access lines (no level) count as INFO."""
    match = _LEVEL_RE.match(line)
    return match.group(1) if match else "INFO"


def passes(line: str, minimum: str) -> bool:
    return LEVELS.index(line_level(line)) >= LEVELS.index(minimum)


class LogTail:
    """Follows one file by offset; survives rotation (the file shrinks or is replaced)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._inode: int | None = None
        self._partial = ""

    def read_new(self) -> list[str]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        if self._inode != stat.st_ino or stat.st_size < self._offset:
            # New or rotated file: start over, but only with its tail.
            self._inode = stat.st_ino
            self._offset = max(0, stat.st_size - TAIL_BYTES) if self._offset == 0 else 0
            self._partial = ""
        if stat.st_size == self._offset:
            return []
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        self._offset += len(data)
        text = self._partial + data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self._partial = lines.pop()  # an unfinished last line waits for its newline
        return lines


class LogsView(QWidget):
    """A read-only view of one log file; polls once a second (cheap: a stat)."""

    def __init__(self, log_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.log_dir = log_dir
        self.source = QComboBox()
        self.source.addItems(list(LOG_FILES))
        self.level = QComboBox()
        self.level.addItems(list(LEVELS))
        self.level.setCurrentText("INFO")
        self.path_label = QLabel()
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(MAX_LINES)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Log:"))
        bar.addWidget(self.source)
        bar.addWidget(QLabel("Level at least:"))
        bar.addWidget(self.level)
        bar.addWidget(self.path_label, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.text, 1)
        self._lines: list[str] = []
        self._tail: LogTail | None = None
        self.source.currentTextChanged.connect(self.on_source_changed)
        self.level.currentTextChanged.connect(self.on_level_changed)
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self.on_timer_timeout)
        self._timer.start()
        self.on_source_changed(self.source.currentText())

    def set_log_dir(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.on_source_changed(self.source.currentText())

    @Slot(str)
    def on_source_changed(self, name: str) -> None:
        path = self.log_dir / LOG_FILES[name]
        self.path_label.setText(str(path))
        self._tail = LogTail(path)
        self._lines = []
        self.text.clear()
        self.poll()

    @Slot(str)
    def on_level_changed(self, _level: str) -> None:
        self.text.clear()
        self._show(self._lines)

    @Slot()
    def on_timer_timeout(self) -> None:
        self.poll()

    def poll(self) -> None:
        if self._tail is None:
            return
        new = self._tail.read_new()
        if new:
            self._lines = (self._lines + new)[-MAX_LINES:]
            self._show(new)

    def _show(self, lines: list[str]) -> None:
        minimum = self.level.currentText()
        shown = [line for line in lines if line and passes(line, minimum)]
        if shown:
            self.text.appendPlainText("\n".join(shown))
