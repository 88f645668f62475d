"""The gateway never imports Qt or the desktop package, not even indirectly (DESIGN §1)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import gateway
for info in pkgutil.walk_packages(gateway.__path__, "gateway."):
    importlib.import_module(info.name)
bad = sorted({n.split(".")[0] for n in sys.modules} & {"PySide6", "shiboken6", "ursus_desktop"})
print(",".join(bad))
"""


def test_importing_every_gateway_module_pulls_in_no_qt() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "", f"gateway imported {out.stdout.strip()}"
