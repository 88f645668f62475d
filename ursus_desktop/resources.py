"""Where the icons and the stylesheet are: source checkout, installed wheel or PyInstaller."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _candidates() -> list[Path]:
    roots = []
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:  # PyInstaller one-folder build: build.spec collects resources/ as "resources"
        roots.append(Path(bundle) / "resources")
    # Installed wheel: ursus_desktop/_resources is a symlink to ../resources in the source
    # tree, which setuptools copies into the wheel as real files.
    roots.append(_HERE / "_resources")
    # Source checkout where the symlink did not survive (Windows without symlinks).
    roots.append(_HERE.parent / "resources")
    return roots


def path(name: str) -> Path:
    """The absolute path of resource ``name`` (e.g. ``"icons/ursus.svg"``); FileNotFoundError."""
    for root in _candidates():
        candidate = root / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"resource {name!r} not found in {[str(r) for r in _candidates()]}")


def read_text(name: str) -> str:
    return path(name).read_text(encoding="utf-8")
