"""The README's two set-up commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

from scripts.readme_commands import README, commands

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command_and_checks_the_run_command() -> None:
    cmds = commands(README.read_text(encoding="utf-8"))
    assert cmds["test"] == "bash scripts/test.sh"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.rstrip().endswith("\nbash scripts/test.sh")  # its summary closes the CI log
    assert "bash scripts/check_readme_run.sh" in ci
    assert cmds["run"].endswith(".venv/bin/ursus")
