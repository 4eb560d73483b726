"""Every setting an operator can turn is in the README's configuration table.

config.py is the one place that reads the environment (nothing else in the
app calls os.environ.get / os.getenv for a setting); a variable read there
and missing from the table is a knob nobody can find.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README_VARIABLE = re.compile(r"`([A-Z][A-Z0-9_]+)`")


def variables_read(source: str) -> set[str]:
    """Names passed to os.environ.get / os.environ[...] / os.getenv or to config's _env_* helpers."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            receiver = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
            if (name == "get" and receiver == "os.environ") or name == "getenv" or name.startswith("_env_"):
                found.add(node.args[0].value)
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            if isinstance(node.slice, ast.Constant):
                found.add(node.slice.value)
    return found


def documented_variables(readme: str) -> set[str]:
    """The variables named in the first column of the README's configuration table."""
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("|"):
            first_cell = line.split("|")[1]
            names.update(README_VARIABLE.findall(first_cell))
    return names


def test_every_variable_config_reads_is_in_the_readme_table():
    read = variables_read((ROOT / "meiqia_app" / "config.py").read_text(encoding="utf-8"))
    documented = documented_variables((ROOT / "README.md").read_text(encoding="utf-8"))
    assert read, "config.py reads no variables: the scan is broken"
    assert sorted(read - documented) == []


def test_only_config_reads_the_environment():
    """A setting read elsewhere would escape the table (passing the environment on to a child process is fine)."""
    readers = {}
    for path in sorted((ROOT / "meiqia_app").rglob("*.py")):
        if path.name == "config.py" and path.parent.name == "meiqia_app":
            continue
        names = variables_read(path.read_text(encoding="utf-8"))
        if names:
            readers[str(path.relative_to(ROOT))] = sorted(names)
    assert readers == {}


def test_the_scan_finds_each_way_of_reading_a_variable():
    source = (
        "import os\n"
        "a = os.environ.get('A_ONE')\n"
        "b = os.getenv('B_TWO', 'x')\n"
        "c = _env_int('C_THREE', 3)\n"
        "d = os.environ['D_FOUR']\n"
        "e = {**os.environ}\n"
    )
    assert variables_read(source) == {"A_ONE", "B_TWO", "C_THREE", "D_FOUR"}
    table = "## Configuration (environment)\n\n| variable | default |\n|---|---|\n| `A_ONE` / `B_TWO` | 1 |\n\n## Next\n| `Z` |"
    assert documented_variables(table) == {"A_ONE", "B_TWO"}
