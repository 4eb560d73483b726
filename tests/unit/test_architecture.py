"""The layering rules of docs/architecture.md, read off the source.

models  <-  services / dbadapter  <-  state  <-  pages / components

- services/, dbadapter/ and models/ never import Reflex: the product's rules
  run (and are tested) without a browser or a websocket.
- state/, pages/ and components/ never touch the database: no SQLAlchemy,
  SQLModel, engine or adapter imports, no table models, no SQL text. They call
  services, which check permissions.
- Only dbadapter/ knows which database it talks to: nobody else branches on
  the dialect (migrations excepted: a revision runs once per database and
  must not change when adapters evolve).
- Tests name the error they expect: ``pytest.raises(Exception)`` passes on
  any crash.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "meiqia_app"

SQL_TEXT = re.compile(
    r"\b(SELECT\s+.+\s+FROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX))\b",
    re.IGNORECASE | re.DOTALL,
)
DIALECT_WORDS = re.compile(r"^(sqlite|postgres(ql)?)", re.IGNORECASE)


def _modules(*names: str) -> Iterator[tuple[str, ast.Module]]:
    """The modules of meiqia_app/<name> (a package folder or a module file)."""
    for name in names:
        target = APP / name
        paths = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        for path in paths:
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imports(tree: ast.Module) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, imported names) for every import, including those inside functions."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module, [alias.name for alias in node.names]


def _is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def reflex_imports(folders: tuple[str, ...]) -> list[str]:
    return [
        f"{name}:{line} imports {module}"
        for name, tree in _modules(*folders)
        for line, module, _ in _imports(tree)
        if _is_under(module, "reflex") or _is_under(module, "reflex_base")
    ]


def database_access_in_ui(folders: tuple[str, ...]) -> list[str]:
    found = []
    forbidden = ("sqlalchemy", "sqlmodel", "meiqia_app.db", "meiqia_app.dbadapter")
    for name, tree in _modules(*folders):
        for line, module, names in _imports(tree):
            if any(_is_under(module, package) for package in forbidden):
                found.append(f"{name}:{line} imports {module}")
            elif _is_under(module, "meiqia_app.models"):
                # Choice lists (SOURCES, LIFECYCLE_STAGES…) are fine; table classes are not.
                tables = [n for n in names if not n.isupper()]
                if tables or not names:
                    found.append(f"{name}:{line} imports {module} {', '.join(tables)}".rstrip())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_TEXT.search(node.value):
                found.append(f"{name}:{node.lineno} holds SQL: {node.value[:60]!r}")
    return found


def dialect_branches(folders: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    """Reads of ``.dialect`` and comparisons / startswith against a database name."""
    found = []
    for name, tree in _modules(*folders):
        if name.startswith(allowed):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "dialect":
                found.append(f"{name}:{node.lineno} reads .dialect")
            elif isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(_names_a_database(operand) for operand in operands):
                    found.append(f"{name}:{node.lineno} compares with a database name")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "startswith"
                and any(_names_a_database(arg) for arg in node.args)
            ):
                found.append(f"{name}:{node.lineno} checks a URL for a database name")
    return sorted(found)


def _names_a_database(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return bool(DIALECT_WORDS.match(node.value))
    if isinstance(node, ast.Tuple):
        return any(_names_a_database(element) for element in node.elts)
    return False


def loose_raises(folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "raises"
                and node.args
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id in ("Exception", "BaseException")
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} pytest.raises({node.args[0].id})")
    return found


# --- the rules --------------------------------------------------------------------------


def test_services_adapters_and_models_do_not_import_reflex():
    assert reflex_imports(("services", "dbadapter", "models")) == []


def test_state_pages_and_components_do_not_touch_the_database():
    assert database_access_in_ui(("state", "pages", "components")) == []


def test_only_the_database_adapter_branches_on_the_dialect():
    everything = sorted(p.name for p in APP.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists())
    assert dialect_branches(tuple(everything), ("meiqia_app/dbadapter/", "meiqia_app/migrations/")) == []


def test_tests_name_the_error_they_expect():
    assert loose_raises(ROOT / "tests") == []


# --- the checks themselves catch what they are for ----------------------------------------


def _tree(source: str) -> ast.Module:
    return ast.parse(source)


def test_the_checks_catch_each_kind_of_breach(tmp_path, monkeypatch):
    """Each rule, fed a module that breaks it, reports it (a check that finds nothing proves nothing)."""
    app = tmp_path / "meiqia_app"
    for folder, source in {
        "services": "import reflex as rx\n",
        "state": "from sqlalchemy import select\nfrom meiqia_app.models import Customer, SOURCES\nQ = 'SELECT id FROM customer'\n",
        "pages": "from meiqia_app.models.customer import SOURCES\n",
        "seed": "def f(engine):\n    return engine.dialect.name == 'sqlite' or URL.startswith(('postgresql', 'x'))\n",
    }.items():
        (app / folder).mkdir(parents=True)
        (app / folder / "m.py").write_text(source)
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_x.py").write_text("import pytest\ndef test_x():\n    with pytest.raises(Exception):\n        pass\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["APP"]), "APP", app)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)

    assert reflex_imports(("services",)) == ["meiqia_app/services/m.py:1 imports reflex"]
    ui = database_access_in_ui(("state", "pages"))
    assert ui == [
        "meiqia_app/state/m.py:1 imports sqlalchemy",
        "meiqia_app/state/m.py:2 imports meiqia_app.models Customer",
        "meiqia_app/state/m.py:3 holds SQL: 'SELECT id FROM customer'",
    ]
    assert dialect_branches(("seed",), ()) == [
        "meiqia_app/seed/m.py:2 checks a URL for a database name",
        "meiqia_app/seed/m.py:2 compares with a database name",
        "meiqia_app/seed/m.py:2 reads .dialect",
    ]
    assert loose_raises(tests) == ["tests/test_x.py:3 pytest.raises(Exception)"]
