"""The project keeps its promises to a new user: the README's commands are what CI runs;
and its tests run where they say they do."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    block = re.search(r"## Set-up.*?```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "the README has a Set-up section with a sh block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_has_two_setup_commands() -> None:
    install, test = _readme_commands()
    assert "pip install" in install and "lanthorn serve" in install
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_and_its_install() -> None:
    install, test = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines()
    pip_install = re.search(r"\S*pip install [^&]*", install)
    assert pip_install and pip_install.group(0).strip() in ci


def test_each_test_module_sets_its_marks_once() -> None:
    """A second ``pytestmark =`` silently drops the first one's marks (a module once lost
    ``all_index_backends`` that way, and its tests ran on SQLite alone)."""
    for module in sorted({*ROOT.glob("tests/test_*.py"), *ROOT.glob("plugins/*/tests/test_*.py")}):
        tree = ast.parse(module.read_text())
        assignments = [node for node in tree.body if isinstance(node, ast.Assign)
                       and any(getattr(t, "id", None) == "pytestmark" for t in node.targets)]
        assert len(assignments) <= 1, f"{module.relative_to(ROOT)} sets pytestmark twice"
