"""README.md's commands, as a newcomer copies them (tests/test_readme.py, test_freshroot.py)."""
from __future__ import annotations

from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parent.parent


def sh_lines(path: Path = REPO / "README.md") -> List[str]:
    """Every line of README's ```sh blocks."""
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```sh"
            continue
        if inside:
            lines.append(line)
    return lines


def _one(predicate, what: str) -> str:
    found = [line for line in sh_lines() if predicate(line)]
    assert len(found) == 1, f"README.md should have one {what}, has {found}"
    return found[0]


def demo_command() -> str:
    """The "Try it" line: a venv in the checkout, then the quickstart."""
    return _one(lambda l: l.startswith("python3 -m venv .venv ") and "quickstart.sh" in l,
                "demo command")


def readme_test_command() -> str:
    """The "Run the tests" line that .ci/run runs too."""
    return _one(lambda l: l.startswith("python3 -m venv .venv ") and "pytest" in l,
                "test command")


def readme_test_packages(options: bool = False) -> List[str]:
    """The Debian packages "Run the tests" asks for (with its apt-get options first)."""
    line = _one(lambda l: l.startswith("apt-get install ") and "python3-venv" in l,
                "apt-get line for the tests")
    return [w for w in line.split()[2:] if options or not w.startswith("-")]
