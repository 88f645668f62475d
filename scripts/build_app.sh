#!/usr/bin/env bash
# Build the desktop app as a one-folder PyInstaller bundle, dist/ursus/ursus, from build.spec;
# check what went in; run the bundle's own --selftest (offscreen, in a bare environment) and
# --version; print the bundle's size and the build time. Exits non-zero on any failure.
# Usage: bash scripts/build_app.sh        (details: docs/PACKAGING.md)
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE=dist/ursus
APP=$BUNDLE/ursus
INTERNAL=$BUNDLE/_internal
fail() {
  echo "build_app: FAILED: $*" >&2
  exit 1
}

# PyInstaller needs objdump (binutils) on Linux; the bundle's selftest needs offscreen Qt's
# system libraries and a font. Same list as scripts/test.sh, installed only when missing.
if command -v dpkg-query >/dev/null; then
  APT_PACKAGES=(binutils libgl1 libegl1 libxkbcommon0 libglib2.0-0 libfreetype6 libfontconfig1
    libdbus-1-3 fonts-dejavu-core)
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "Installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# PyInstaller (the [build] extra), and URSUS installed as a package: the spec copies its
# metadata (ursus --version), and an editable install made before ursus_desktop/__init__.py
# existed leaves ursus_desktop a namespace package (ImportError: cannot import name ...).
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
if ! .venv/bin/python -c '
import importlib.metadata, PyInstaller, ursus_desktop
importlib.metadata.version("ursus")
assert ursus_desktop.__file__, "namespace package"
' 2>/dev/null; then
  .venv/bin/python -m pip install -q -e '.[build]'
fi

# The spec's fast checks first (a second or two) when the test tools are installed.
if .venv/bin/python -c 'import pytest, pytestqt' 2>/dev/null; then
  QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -q -p no:cacheprovider tests/packaging
fi

start=$(date +%s.%N)
.venv/bin/pyinstaller --noconfirm --clean --log-level WARN \
  --distpath dist --workpath build/ursus build.spec
build_seconds=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
[ -x "$APP" ] || fail "no executable $APP"

# Files loaded at run time that no import statement names: resources, the sandbox fixtures,
# stripe's CA bundle, the Qt platform plugins (X11, Wayland, offscreen) and the SVG plugins
# (every icon in resources/ is an SVG).
required=(stripe/data/ca-certificates.crt
  PySide6/Qt/plugins/platforms/libqxcb.so PySide6/Qt/plugins/platforms/libqwayland.so
  PySide6/Qt/plugins/platforms/libqoffscreen.so PySide6/Qt/plugins/imageformats/libqsvg.so
  PySide6/Qt/plugins/iconengines/libqsvgicon.so)
while IFS= read -r file; do required+=("$file"); done < <(
  find resources gateway/sandbox/fixtures -type f ! -name '*.py' ! -path '*__pycache__*' | sort)
for file in "${required[@]}"; do
  [ -e "$INTERNAL/$file" ] || fail "missing from the bundle: $file"
done

# Nothing the spec leaves out came back (a build machine with GTK 3, a new Qt module ...).
stray=$(find "$BUNDLE" \( -name 'libgtk*' -o -name 'libgdk*' -o -name 'libatk*' \
  -o -name 'libpango*' -o -name 'libcairo*' -o -name 'libQt6Quick*' -o -name 'libQt6Qml*' \
  -o -name 'libQt6WebEngine*' -o -name 'libQt63D*' -o -name 'libQt6Multimedia*' \
  -o -name 'libQt6Pdf*' -o -name 'libtk*' -o -name 'libtcl*' -o -name '_tkinter*' \) -print)
[ -z "$stray" ] || fail "stray libraries in the bundle: $stray"
dangling=$(find "$BUNDLE" -xtype l)
[ -z "$dangling" ] || fail "dangling symlinks in the bundle: $dangling"

# Modules only reached dynamically (keyring's entry points, SQLAlchemy's dialect registry,
# limits' storage registry) must be in the archive; unwanted ones must not.
modules=$(.venv/bin/pyi-archive_viewer -r -b "$APP" | sed 's/^ *//')
for module in keyring.backends.SecretService keyring.backends.kwallet keyring.backends.fail \
  keyring.backends.chainer secretstorage jeepney sqlalchemy.dialects.sqlite limits.storage.memory \
  gateway.sandbox.server gateway.processor waitress ursus_desktop.frozen; do
  grep -qx "$module" <<<"$modules" || fail "module $module is not in the bundle"
done
for module in tkinter numpy keyrings.alt pytest; do
  if grep -qx "$module" <<<"$modules"; then fail "module $module should not be in the bundle"; fi
done

# The bundle's own selftest, as on a clean machine: a bare environment (no venv, no PYTHONPATH,
# an empty HOME), another working directory. Afterwards nothing inside the bundle may have
# changed: data and logs belong under platformdirs (or the selftest's temp dir).
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/home"
touch "$scratch/marker"
sleep 1 # mtime granularity: anything written below is strictly newer than the marker
bare_env=(env -i "HOME=$scratch/home" "PATH=/usr/bin:/bin" "LANG=C.UTF-8" "QT_QPA_PLATFORM=offscreen")
app_path=$(realpath "$APP")
set +e
selftest=$(cd "$scratch" && timeout 120 "${bare_env[@]}" "$app_path" --selftest 2>&1)
selftest_rc=$?
set -e
echo "$selftest"
[ $selftest_rc -eq 0 ] || fail "the bundle's --selftest exited $selftest_rc"
grep -q "^selftest ok: " <<<"$selftest" || fail "the bundle's --selftest printed no 'selftest ok' line"
written=$(find "$BUNDLE" -newer "$scratch/marker" -print)
[ -z "$written" ] || fail "the selftest wrote inside the bundle: $written"

expected="ursus $(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
version=$(cd "$scratch" && "${bare_env[@]}" "$app_path" --version)
[ "$version" = "$expected" ] || fail "--version printed '$version', expected '$expected'"
echo "$version"

size=$(du -sh "$BUNDLE" | cut -f1)
echo "build_app: ok: $APP, bundle $size ($(du -sb "$BUNDLE" | cut -f1) bytes), built in ${build_seconds} s"
