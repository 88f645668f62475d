"""URSUS desktop: the merchant's window on top of the headless gateway."""

from __future__ import annotations

from importlib import metadata

APP_NAME = "URSUS"
ORG_NAME = "ursus"

try:
    __version__ = metadata.version("ursus")
except metadata.PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0.1.0"
