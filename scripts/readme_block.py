"""Print the first fenced code block of one language under a README section: ``readme_block.py SECTION LANG``.
CI runs the README's install commands and Python snippet this way, so they are tested as written."""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def block(text: str, section: str, language: str) -> str:
    """The first ```language block between the heading ``## section`` and the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    if match is None:
        raise SystemExit(f"readme_block.py: no section '## {section}' in {README}")
    code = re.search(rf"^```{re.escape(language)}\n(.*?)^```", match.group(1), re.MULTILINE | re.DOTALL)
    if code is None:
        raise SystemExit(f"readme_block.py: no ```{language} block under '## {section}' in {README}")
    return code.group(1)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: readme_block.py SECTION LANGUAGE")
    sys.stdout.write(block(README.read_text(), sys.argv[1], sys.argv[2]))
