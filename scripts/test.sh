#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian/Ubuntu machine, then run it.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

# System libraries for offscreen Qt, a font, and a real Secret Service (gnome-keyring
# under dbus-run-session) for the keyring test; sqlite3 for the export benchmark.
APT_PACKAGES=(libgl1 libegl1 libxkbcommon0 libglib2.0-0 libfreetype6 libfontconfig1
  libdbus-1-3 fonts-dejavu-core dbus dbus-daemon gnome-keyring sqlite3)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "Installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,build]'

export QT_QPA_PLATFORM=offscreen
# The keyring test against a real Secret Service (gnome-keyring on a private D-Bus),
# then the whole suite.
dbus-run-session -- sh -c 'echo -n ursus-ci | gnome-keyring-daemon --unlock --components=secrets >/dev/null \
  && URSUS_TEST_SECRET_SERVICE=1 .venv/bin/python -m pytest -q -p no:cacheprovider -m secret_service tests/desktop'
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
