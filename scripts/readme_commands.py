"""Print one of the README's two set-up commands (`run` or `test`), so CI runs them verbatim.

The first ```sh block under "## Quick start" installs and runs the app; the second
installs the test dependencies and runs the suite.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def commands(text: str) -> dict[str, str]:
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return {"run": blocks[0].strip(), "test": blocks[1].strip()}


if __name__ == "__main__":
    print(commands(README.read_text(encoding="utf-8"))[sys.argv[1]])
