#!/usr/bin/env bash
# Run the README's install-and-run command verbatim in a copy of the checkout, the way a
# newcomer would on a fresh machine without a display, and check that a sale went through.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=$(python3 scripts/readme_commands.py run)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# tar keeps the symlink ursus_desktop/_resources -> ../resources as a symlink.
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$work"
echo "README run command: $cmd"
(cd "$work" && env -u DISPLAY -u WAYLAND_DISPLAY -u QT_QPA_PLATFORM HOME="$work/home" \
  bash -c "$cmd") | tee "$work/out.txt"
grep -Eq "transfer tr_[A-Za-z0-9]+ created" "$work/out.txt"
echo "check_readme_run: ok"
