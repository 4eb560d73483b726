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
- Only services/customers/access.py reads a customer by id (``session.get(Customer,
  …)``, ``….where(Customer.id == …)`` in a SELECT): everything else goes
  through CustomerAccess, so who may reach which customer is decided in one
  place (issue 21).
- Nobody decides by role name (``is_admin``, ``role_name == …``, ``ADMIN_ROLE``)
  outside identity (services/identity/rbac.py, services/identity/users.py): what a role may do
  is a permission the role matrix shows.
- One way to run background work (issue 21): long work runs as jobs of the
  runner (services/platform/jobs.py), the only place that starts worker threads;
  besides it only the infrastructure loops in THREADS_ALLOWED start a thread.
  Nightly tasks are registered in one place at start
  (services/platform/scheduled_tasks.py): ``register_task(`` is called nowhere else, so
  importing a module registers nothing. Every module with job workers is in
  ``startup.WORKER_MODULES``, so a resumed job always finds its code.
- Nobody clears the list counts or the report caches by hand
  (``invalidate_counts``, ``invalidate_cache``): a write says which customers
  changed (services/customers/changes.py) and the subscribers of
  services/customers/change_subscribers.py, the only callers, retire them.
- Every service lives in its feature's package (services/customers/, tags/,
  exports/, …; issue 21): nothing sits directly in services/ but errors.py
  (used everywhere) and __init__.py, and no service module is longer than
  SERVICE_MAX_LINES, except the few in LONG_SERVICES, each with its reason.
- Services return typed results (issue 21): a public function (or method) of
  services/ annotated ``-> dict``, ``-> list[dict]``, ``-> dict[str, object]``
  (a record whose keys nobody checks) is one of BARE_DICTS_ALLOWED, each with
  its reason. Typed mappings (``dict[int, str]``, ``dict[str, int]``) and a
  typed object's own JSON form (``to_dict`` / ``as_dict``) are fine.
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


# Reading a customer by id is CustomerAccess's alone. Also allowed:
# - models/, migrations/, seed/, dbadapter/: below the services (schema, data
#   set-up, database-specific SQL; they serve no person's request);
# - services/customers/lifecycle_update.py: the system's set-based UPDATE of stages and
#   tiers (recompute_lifecycle(customer_id=…) runs after a change the caller
#   already loaded through CustomerAccess; it reads nothing back).
CUSTOMER_BY_ID_ALLOWED = (
    "meiqia_app/services/customers/access.py",
    "meiqia_app/models/",
    "meiqia_app/migrations/",
    "meiqia_app/seed/",
    "meiqia_app/dbadapter/",
    "meiqia_app/services/customers/lifecycle_update.py",
)
# Identity: where roles are defined, resolved and administered.
ROLE_NAME_ALLOWED = ("meiqia_app/services/identity/rbac.py", "meiqia_app/services/identity/users.py")
# Caches follow the "customers changed" signal: only its subscribers retire them.
INVALIDATIONS = ("invalidate_counts", "invalidate_cache")
INVALIDATION_ALLOWED = ("meiqia_app/services/customers/change_subscribers.py",)


def _table_aliases(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(names bound to Customer's table or columns, names bound to any model's table or columns).

    ``C = Customer.__table__.c`` / ``T = Customer.__table__``: the customer's;
    ``TA = TagAssignment.__table__.c``: some table's (a column of it is no value).
    """
    customer, tables = {"Customer"}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Attribute) and value.attr == "c":
                value = value.value
            if isinstance(value, ast.Attribute) and value.attr == "__table__" and isinstance(value.value, ast.Name):
                tables.add(node.targets[0].id)
                if value.value.id == "Customer":
                    customer.add(node.targets[0].id)
    return customer, tables


def _is_customer_ref(node: ast.AST, customer: set[str]) -> bool:
    """Customer, C (an alias), Customer.__table__, Customer.__table__.c."""
    if isinstance(node, ast.Name):
        return node.id in customer
    if isinstance(node, ast.Attribute) and node.attr in ("c", "__table__"):
        return _is_customer_ref(node.value, customer)
    return False


def _is_column(node: ast.AST, tables: set[str]) -> bool:
    """A column of some table (a join or a correlation), not a value."""
    if not isinstance(node, ast.Attribute):
        return False
    base = node.value
    if isinstance(base, ast.Attribute) and base.attr == "c":
        return True
    return isinstance(base, ast.Name) and (base.id in tables or base.id[:1].isupper())


def _reads_customers(call: ast.Call, customer: set[str]) -> bool:
    """Whether the statement a ``.where`` belongs to reads the customer table: a SELECT
    (not an UPDATE or DELETE, guarded writes) naming Customer or its columns."""
    calls, node = [], call.func.value if isinstance(call.func, ast.Attribute) else None
    while node is not None:
        if isinstance(node, ast.Call):
            calls.append(node)
            node = node.func.value if isinstance(node.func, ast.Attribute) else None
        elif isinstance(node, ast.Attribute):
            node = node.value
        else:
            node = None
    names = [c.func.id if isinstance(c.func, ast.Name) else c.func.attr for c in calls]
    if any(name in ("update", "delete") for name in names) or not any("select" in name for name in names):
        return False
    return any(
        _is_customer_ref(part, customer) or (isinstance(part, ast.Attribute) and _is_customer_ref(part.value, customer))
        for c in calls
        for arg in c.args
        for part in ast.walk(arg)
    )


def customer_loads_by_id(folders: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    found = []
    for name, tree in _modules(*folders):
        if name.startswith(allowed):
            continue
        customer, tables = _table_aliases(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr == "get" and node.args and _is_customer_ref(node.args[0], customer):
                found.append(f"{name}:{node.lineno} gets a Customer by id")
            elif node.func.attr in ("where", "filter") and _reads_customers(node, customer):
                for condition in node.args:
                    for compare in ast.walk(condition):
                        if not (isinstance(compare, ast.Compare) and isinstance(compare.ops[0], ast.Eq)):
                            continue
                        sides = [compare.left, *compare.comparators]
                        for side, other in ((sides[0], sides[-1]), (sides[-1], sides[0])):
                            if (
                                isinstance(side, ast.Attribute)
                                and side.attr == "id"
                                and _is_customer_ref(side.value, customer)
                                and not _is_column(other, tables)
                            ):
                                found.append(f"{name}:{compare.lineno} selects a customer by id")
                                break
    return sorted(set(found))


def role_name_decisions(folders: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    found = []
    for name, tree in _modules(*folders):
        if name.startswith(allowed):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "is_admin":
                found.append(f"{name}:{node.lineno} asks is_admin")
            elif isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(_names_a_role(operand) for operand in operands):
                    found.append(f"{name}:{node.lineno} compares a role name")
    return sorted(set(found))


def hand_called_invalidations(folders: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    """Calls of (and any other reference to: an import, a callback) the cache invalidations."""
    found = []
    for name, tree in _modules(*folders):
        if name.startswith(allowed):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in INVALIDATIONS:
                found.append(f"{name}:{node.lineno} uses {node.id}")
            elif isinstance(node, ast.Attribute) and node.attr in INVALIDATIONS:
                found.append(f"{name}:{node.lineno} uses {node.attr}")
            elif isinstance(node, ast.ImportFrom):
                found.extend(f"{name}:{node.lineno} imports {a.name}" for a in node.names if a.name in INVALIDATIONS)
    return sorted(set(found))


# Every writer of customer rows says so (issue 21): a module that UPDATEs, INSERTs
# or DELETEs customer rows publishes the change (services/customers/changes.py:
# ``customers_changed`` in its transaction, or ``publish_committed`` for a write of
# no session, the backup's restore), or the list counts, the report figures and
# the on-change rules go stale. Where it needs no signal of its own, why:
CUSTOMER_WRITES_ALLOWED = {
    "meiqia_app/migrations/": "Alembic revisions: run once, before the app serves (no cache holds anything yet)",
    "meiqia_app/dbadapter/": "database-specific statements for a table the calling service names; it publishes",
    "meiqia_app/models/": "table definitions",
    "meiqia_app/services/integrations/ingest_batch.py": "one ingest batch's writes; ingest.py, which runs the "
    "batch, publishes customers_changed(batch.touched, ACTIVITY) once it is written",
}
CHANGE_PUBLISHERS = ("customers_changed", "publish_committed")
RAW_CUSTOMER_WRITE = re.compile(r"\b(UPDATE\s+customer|INSERT\s+INTO\s+customer|DELETE\s+FROM\s+customer)\b", re.I)
WRITE_STATEMENTS = ("update", "insert", "delete")


def _writable_customer_names(tree: ast.AST, customer: set[str]) -> set[str]:
    """Names bound to a Customer row about to change: ``Customer(...)``, a by-id load
    ``for_write=True`` or a pool claim's load (services/customers/access.py)."""
    names = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        call = node.value
        new_row = isinstance(call.func, ast.Name) and call.func.id in customer
        loaded = _called_name(call) == "load_for_claim" or (
            _called_name(call) == "load"
            and any(
                k.arg == "for_write" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in call.keywords
            )
        )
        if new_row or loaded:
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def customer_writes(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, what) for each write of the customer table: ``update/insert/delete(Customer…)``,
    ``Customer.__table__.update()``, ``session.add`` / ``delete`` of a Customer row,
    attributes set on a row loaded for writing, raw SQL "UPDATE customer …"."""
    customer, _ = _table_aliases(tree)
    rows = _writable_customer_names(tree, customer)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _called_name(node)
            if name in WRITE_STATEMENTS and node.args and _is_customer_ref(node.args[0], customer):
                found.append((node.lineno, f"{name}(Customer)"))
            elif (
                name in WRITE_STATEMENTS
                and isinstance(node.func, ast.Attribute)
                and _is_customer_ref(node.func.value, customer)
            ):
                found.append((node.lineno, f"Customer.{name}()"))
            elif name in ("add", "add_all", "delete", "merge") and node.args:
                arg = node.args[0]
                if (isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name) and arg.func.id in customer) or any(
                    isinstance(part, ast.Name) and part.id in rows for part in ast.walk(arg)
                ):
                    found.append((node.lineno, f"session.{name} of a Customer"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = RAW_CUSTOMER_WRITE.search(node.value)
            if match:
                found.append((node.lineno, f"SQL {' '.join(match.group(0).split())}"))
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found += [
                (node.lineno, f"sets {t.value.id}.{t.attr}")
                for t in targets
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in rows
            ]
    return sorted(set(found))


def silent_customer_writers(folders: tuple[str, ...], allowed) -> list[str]:
    """Modules that write customer rows and never publish the change."""
    found = []
    for name, tree in _modules(*folders):
        if name.startswith(tuple(allowed)):
            continue
        writes = customer_writes(tree)
        publishes = any(isinstance(n, ast.Call) and _called_name(n) in CHANGE_PUBLISHERS for n in ast.walk(tree))
        if writes and not publishes:
            line, what = writes[0]
            found.append(f"{name}:{line} writes customer rows ({what}) without customers_changed")
    return sorted(found)


def _names_a_role(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("role_name", "ADMIN_ROLE")
    if isinstance(node, ast.Attribute):
        return node.attr in ("role_name", "ADMIN_ROLE")
    return False


# Who may start a thread, and why (everything else runs as a job of the runner).
THREADS_ALLOWED = {
    "meiqia_app/services/platform/jobs.py": "the job runner itself: the worker threads of jobs",
    "meiqia_app/services/platform/scheduler.py": "the scheduler loop (infrastructure: each due task runs as a job)",
    "meiqia_app/services/integrations/webhook_delivery.py": "the webhook delivery loop over the persisted outbox (infrastructure)",
    "meiqia_app/services/platform/process_owner.py": "the heartbeats of the running jobs' rows (infrastructure)",
    "meiqia_app/dbadapter/sqlite.py": "SQLite's WAL checkpointer (infrastructure, database-specific)",
    "meiqia_app/services/exports/rows.py": "parallel row readers inside an export job, joined before it ends",
}
THREAD_STARTERS = ("Thread", "Timer", "ThreadPoolExecutor", "ProcessPoolExecutor", "start_new_thread")
TASKS_REGISTERED_IN = "meiqia_app/services/platform/scheduled_tasks.py"


# Feature packages (issue 21): a newcomer finds a service by its folder, and a
# module says one thing. The exceptions are not split yet; each names why.
SERVICES_TOP_LEVEL_ALLOWED = {"__init__.py", "errors.py"}
SERVICE_MAX_LINES = 700
LONG_SERVICES: dict[str, str] = {  # module -> why it may be longer (none today)
}


def misplaced_services(services: Path) -> list[str]:
    """Modules directly in services/ (each feature lives in its package)."""
    return sorted(
        str(path.relative_to(ROOT))
        for path in services.iterdir()
        if path.suffix == ".py" and path.name not in SERVICES_TOP_LEVEL_ALLOWED
    )


def long_services(services: Path, limit: int, allowed) -> list[str]:
    return sorted(
        f"{path.relative_to(ROOT)}: {lines} lines"
        for path in services.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > limit
        and str(path.relative_to(ROOT)) not in allowed
    )


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def thread_starts(folders: tuple[str, ...], allowed) -> list[str]:
    """``threading.Thread(…)``, ``Thread(…)``, timers and executors outside the allowed modules."""
    return sorted(
        f"{name}:{node.lineno} starts a thread ({_called_name(node)})"
        for name, tree in _modules(*folders)
        if name not in allowed
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _called_name(node) in THREAD_STARTERS
    )


def task_registrations(folders: tuple[str, ...], allowed: str) -> list[str]:
    return sorted(
        f"{name}:{node.lineno} calls register_task"
        for name, tree in _modules(*folders)
        if name != allowed
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _called_name(node) == "register_task"
    )


def worker_modules(folders: tuple[str, ...]) -> set[str]:
    """Modules that call register_worker / register_policy (a policy registers its worker)."""
    return {
        name.removesuffix(".py").replace("/", ".")
        for name, tree in _modules(*folders)
        if name != "meiqia_app/services/platform/jobs.py"
        and any(
            isinstance(node, ast.Call) and _called_name(node) in ("register_worker", "register_policy")
            for node in ast.walk(tree)
        )
    }


# Public service functions that still return a bare dict, and why (issue 21: results are small
# frozen dataclasses). "module.py:function" (or "module.py:Class.method"), paths under services/.
BARE_DICTS_ALLOWED = {
    # JSON documents stored or written as they are
    "audit/log.py:text_ref": "audit details: a keyed hash and the length of a text, stored in the entry's JSON",
    "customers/selection.py:Selection.describe": "audit details and job params: what was selected, stored as JSON",
    "exports/info.py:audit_details": "audit details of an export: what was exported, stored in the entry's JSON",
    "customers/selection.py:described_query": "audit details: a list query with its search masked, stored as JSON",
    "exports/portability.py:collect": "the customer's data document, written to the file as JSON as it is",
    "privacy/erasure.py:reapply_ledger": "the restore's report, stored as JSON with the restore",
    "reports/aggregates.py:state": "the aggregates' state row, a JSON document (status, zone, built_at)",
    "reports/aggregates.py:build": "the same state document after a build (None when nothing was built)",
    "customers/duplicates/custom_merge.py:audited_document": "audit details: a merged customer's custom values "
    "with sensitive ones masked, stored as JSON",
    "cleanup/retention.py:counts_so_far": "a job's checkpoint counts, stored as JSON in the job table",
    "custom_fields/records.py:record_values": "a record's custom_fields JSON object (the admin's keys to typed JSON "
    "values), sent to API clients and webhooks as it is",
    # request parameters and column values, dicts by nature
    "reports/views.py:default_segment_params": "the segment report's request params (the page sends them back)",
    "reports/views.py:shift_period": "the dashboard's request params for the period before / after",
    "customers/validation.py:clean_customer_fields": "column values for a Customer row (model keyword arguments)",
    "custom_fields/values.py:values_from_form": "a form's raw custom values by key, checked by the edit service",
    "customers/validation.py:clean_extras": "custom attributes and consents for a Customer row",
    "customers/access.py:CustomerAccess.load_many": "rows by customer id (SQL result rows)",
    "cleanup/criteria.py:reason_conditions": "criterion -> SQL condition (a mapping of expressions, not a result)",
    # the audit page's sentences
    "audit/sentences.py:sentences": "one {zh, en} sentence per entry (the two languages by key)",
}
SERIALISERS = ("to_dict", "as_dict")  # a typed object's own JSON form


def _bare_dict(node: ast.AST | None) -> bool:
    """``dict``, ``dict[str, object]`` / ``dict[str, Any]``, ``list[dict…]``, ``dict[K, dict]``, or one of
    them in a union: a record whose keys nobody checks. ``dict[int, str]`` is a typed mapping."""
    if node is None:
        return False
    if isinstance(node, ast.Name):
        return node.id == "dict"
    if isinstance(node, ast.BinOp):  # X | None
        return _bare_dict(node.left) or _bare_dict(node.right)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if node.value.id == "list":
            return any(isinstance(a, (ast.Name, ast.Subscript)) and ast.unparse(a).startswith("dict") for a in args)
        if node.value.id == "dict" and len(args) == 2:
            value = args[1]
            return (isinstance(value, ast.Name) and value.id in ("object", "Any", "dict")) or _bare_dict(value)
    return False


def bare_dict_returns(folder: str) -> dict[str, str]:
    """{"module.py:function": annotation} for the public functions and methods returning a bare dict."""
    found = {}
    base = APP / folder
    for path in sorted(base.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        name = str(path.relative_to(base))
        functions = [
            (node.name, node) for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
            functions += [
                (f"{cls.name}.{node.name}", node)
                for node in cls.body
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in SERIALISERS
            ]
        for qualified, node in functions:
            if not node.name.startswith("_") and _bare_dict(node.returns):
                found[f"{name}:{qualified}"] = ast.unparse(node.returns)
    return found


# --- the rules --------------------------------------------------------------------------


def _service_module_names(tree: ast.Module) -> set[str]:
    """Local names bound to a services module (``from meiqia_app.services import backup``,
    ``from meiqia_app.services.exports import service``, ``import meiqia_app.services.x as y``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and _is_under(node.module, "meiqia_app.services"):
            for alias in node.names:
                if (APP / Path(*node.module.split(".")[1:]) / f"{alias.name}.py").exists() or (
                    APP / Path(*node.module.split(".")[1:]) / alias.name / "__init__.py"
                ).exists():
                    names.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _is_under(alias.name, "meiqia_app.services") and alias.asname:
                    names.add(alias.asname)
    return names


def private_service_calls(folders: tuple[str, ...]) -> list[str]:
    """Uses of a service's private names (``module._name`` or ``from module import _name``)
    outside services/: those are the service's own business and may change any day."""
    found = []
    for name, tree in _modules(*folders):
        modules = _service_module_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and _is_under(node.module, "meiqia_app.services"):
                found += [
                    f"{name}:{node.lineno} imports {node.module}.{a.name}" for a in node.names if a.name.startswith("_")
                ]
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_services_adapters_and_models_do_not_import_reflex():
    assert reflex_imports(("services", "dbadapter", "models")) == []


def test_state_pages_and_components_do_not_touch_the_database():
    assert database_access_in_ui(("state", "pages", "components")) == []


def test_the_ui_and_web_use_only_public_service_functions():
    assert private_service_calls(("state", "pages", "components", "web")) == []


def test_only_the_database_adapter_branches_on_the_dialect():
    everything = sorted(p.name for p in APP.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists())
    assert dialect_branches(tuple(everything), ("meiqia_app/dbadapter/", "meiqia_app/migrations/")) == []


def test_tests_name_the_error_they_expect():
    assert loose_raises(ROOT / "tests") == []


def test_only_customer_access_reads_a_customer_by_id():
    everything = sorted(p.name for p in APP.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists())
    assert customer_loads_by_id(tuple(everything), CUSTOMER_BY_ID_ALLOWED) == []


def test_nobody_decides_by_role_name_outside_identity():
    everything = sorted(p.name for p in APP.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists())
    assert role_name_decisions(tuple(everything), ROLE_NAME_ALLOWED) == []


def _everything() -> tuple[str, ...]:
    return tuple(sorted(p.name for p in APP.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()))


def test_only_the_job_runner_and_the_infrastructure_loops_start_threads():
    assert thread_starts(_everything(), THREADS_ALLOWED) == []
    for module in THREADS_ALLOWED:  # the allow-list names no module that is gone
        assert (ROOT / module).is_file(), module


def test_nightly_tasks_are_registered_in_one_place():
    assert task_registrations(_everything(), TASKS_REGISTERED_IN) == []


def test_startup_loads_every_module_with_job_workers():
    from meiqia_app.services.platform import startup

    assert worker_modules(_everything()) == set(startup.WORKER_MODULES)


def test_only_the_change_subscribers_invalidate_caches():
    everything = sorted(p.name for p in APP.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists())
    assert hand_called_invalidations(tuple(everything), INVALIDATION_ALLOWED) == []


def test_every_writer_of_customer_rows_publishes_the_change():
    assert silent_customer_writers(_everything(), CUSTOMER_WRITES_ALLOWED) == []
    for module in CUSTOMER_WRITES_ALLOWED:  # the allow-list names nothing that is gone
        assert (ROOT / module).exists(), module


def test_the_customer_writer_check_finds_each_kind_of_write(tmp_path, monkeypatch):
    app = tmp_path / "meiqia_app"
    (app / "services").mkdir(parents=True)
    (app / "services" / "silent.py").write_text(
        "T = Customer.__table__\n"
        "def f(session, access, i):\n"
        "    session.execute(update(Customer.__table__).where(T.c.id == i).values(name='x'))\n"
        "    session.execute(T.delete().where(T.c.id == i))\n"
        "    session.execute(insert(T).values(name='x'))\n"
        "    session.add(Customer(name='x'))\n"
        "    row = access.load(session, i, for_write=True)\n"
        "    row.name = 'y'\n"
        "    seen = access.load(session, i)\n"
        "    seen.name = 'not written: a read-only load'\n"
        "    claimed = access.load_for_claim(session, i)\n"
        "    session.add(claimed)\n"
        "    session.execute(text('UPDATE customer SET name = 1'))\n"
        "    session.execute(text('UPDATE customer_search SET text = 1'))\n"
    )
    (app / "services" / "loud.py").write_text(
        "def f(session, i):\n"
        "    session.execute(update(Customer).values(name='x'))\n"
        "    customers_changed(session, [i], EDITED)\n"
    )
    (app / "services" / "reader.py").write_text("def f(conn):\n    return conn.execute(select(Customer.id))\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["APP"]), "APP", app)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)

    tree = ast.parse((app / "services" / "silent.py").read_text())
    assert [what for _line, what in customer_writes(tree)] == [
        "update(Customer)",
        "Customer.delete()",
        "insert(Customer)",
        "session.add of a Customer",
        "sets row.name",
        "session.add of a Customer",
        "SQL UPDATE customer",
    ]
    assert silent_customer_writers(("services",), {}) == [
        "meiqia_app/services/silent.py:3 writes customer rows (update(Customer)) without customers_changed"
    ]
    assert silent_customer_writers(("services",), {"meiqia_app/services/silent.py": "a reason"}) == []


def test_services_return_typed_results_not_bare_dicts():
    found = bare_dict_returns("services")
    assert sorted(set(found) - set(BARE_DICTS_ALLOWED)) == []
    # The allow-list names nothing that is gone or already typed: it only shrinks.
    assert sorted(set(BARE_DICTS_ALLOWED) - set(found)) == []


def test_every_service_lives_in_its_feature_package():
    assert misplaced_services(APP / "services") == []


def test_no_service_module_is_a_god_file():
    assert long_services(APP / "services", SERVICE_MAX_LINES, LONG_SERVICES) == []
    for module in LONG_SERVICES:  # an exception that got split (or is gone) leaves the list
        path = ROOT / module
        assert path.is_file() and len(path.read_text(encoding="utf-8").splitlines()) > SERVICE_MAX_LINES, module


# --- the checks themselves catch what they are for ----------------------------------------


def _tree(source: str) -> ast.Module:
    return ast.parse(source)


def test_the_checks_catch_each_kind_of_breach(tmp_path, monkeypatch):
    """Each rule, fed a module that breaks it, reports it (a check that finds nothing proves nothing)."""
    app = tmp_path / "meiqia_app"
    for folder, source in {
        "services": "import reflex as rx\n",
        "state": "from sqlalchemy import select\nfrom meiqia_app.models import Customer, SOURCES\nQ = 'SELECT id FROM customer'\n",
        "pages": (
            "from meiqia_app.models.customer import SOURCES\n"
            "from meiqia_app.services import backup\n"
            "from meiqia_app.services.platform.backup import _size\n"
            "x = backup._size(1)\n"
        ),
        "seed": "def f(engine):\n    return engine.dialect.name == 'sqlite' or URL.startswith(('postgresql', 'x'))\n",
        "web": (
            "C = Customer.__table__.c\n"
            "TA = TagAssignment.__table__.c\n"
            "def f(session, conn, actor, role, i):\n"
            "    a = session.get(Customer, i)\n"
            "    b = conn.execute(select(C.name).where(C.id == i))\n"
            "    c = session.exec(select(Customer).where(Customer.id == int(i))).first()\n"
            "    fine = update(Customer.__table__).where(C.id == i, C.version == 2)\n"
            "    also_fine = select(TA.tag_id).where(TA.customer_id == C.id, C.id.in_([i]))\n"
            "    if actor.is_admin or actor.role_name == 'admin' or role.name == ADMIN_ROLE:\n"
            "        return a, b, c, fine, also_fine\n"
        ),
        "components": (
            "import threading\n"
            "from threading import Thread\n"
            "from concurrent.futures import ThreadPoolExecutor\n"
            "from meiqia_app.services import scheduler, jobs\n"
            "threading.Thread(target=print).start()\n"
            "Thread(target=print).start()\n"
            "ThreadPoolExecutor(2)\n"
            "scheduler.register_task('x', print, '01:00')\n"
            "jobs.register_worker('x', print)\n"
        ),
        "jobs": (
            "from meiqia_app.services.customers.listing import invalidate_counts\n"
            "def invalidate_cache():\n"
            "    return None\n"
            "def f(reports, later):\n"
            "    invalidate_counts()\n"
            "    reports.invalidate_cache()\n"
            "    later(invalidate_counts)\n"
        ),
    }.items():
        (app / folder).mkdir(parents=True)
        (app / folder / "m.py").write_text(source)
    (app / "services" / "results.py").write_text(
        "def a() -> dict: ...\n"
        "def b(x) -> list[dict[str, str]]: ...\n"
        "def c() -> dict[str, object] | None: ...\n"
        "def d() -> dict[int, dict]: ...\n"
        "def fine() -> dict[int, str]: ...\n"
        "def _private() -> dict: ...\n"
        "class R:\n"
        "    def to_dict(self) -> dict: ...\n"
        "    def view(self) -> list[dict]: ...\n"
    )
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
    (app / "services" / "backup.py").write_text("def _size(n):\n    return n\n")
    assert private_service_calls(("pages",)) == [
        "meiqia_app/pages/m.py:3 imports meiqia_app.services.platform.backup._size",
        "meiqia_app/pages/m.py:4 uses backup._size",
    ]
    assert dialect_branches(("seed",), ()) == [
        "meiqia_app/seed/m.py:2 checks a URL for a database name",
        "meiqia_app/seed/m.py:2 compares with a database name",
        "meiqia_app/seed/m.py:2 reads .dialect",
    ]
    assert loose_raises(tests) == ["tests/test_x.py:3 pytest.raises(Exception)"]
    assert customer_loads_by_id(("web",), ()) == [
        "meiqia_app/web/m.py:4 gets a Customer by id",
        "meiqia_app/web/m.py:5 selects a customer by id",
        "meiqia_app/web/m.py:6 selects a customer by id",
    ]
    assert customer_loads_by_id(("web",), ("meiqia_app/web/",)) == []
    assert role_name_decisions(("web",), ()) == [
        "meiqia_app/web/m.py:9 asks is_admin",
        "meiqia_app/web/m.py:9 compares a role name",
    ]
    assert thread_starts(("components",), {}) == [
        "meiqia_app/components/m.py:5 starts a thread (Thread)",
        "meiqia_app/components/m.py:6 starts a thread (Thread)",
        "meiqia_app/components/m.py:7 starts a thread (ThreadPoolExecutor)",
    ]
    assert thread_starts(("components",), {"meiqia_app/components/m.py": "a reason"}) == []
    assert task_registrations(("components",), TASKS_REGISTERED_IN) == [
        "meiqia_app/components/m.py:8 calls register_task"
    ]
    assert worker_modules(("components",)) == {"meiqia_app.components.m"}
    assert hand_called_invalidations(("jobs",), ()) == [
        "meiqia_app/jobs/m.py:1 imports invalidate_counts",
        "meiqia_app/jobs/m.py:5 uses invalidate_counts",
        "meiqia_app/jobs/m.py:6 uses invalidate_cache",
        "meiqia_app/jobs/m.py:7 uses invalidate_counts",
    ]
    assert hand_called_invalidations(("jobs",), ("meiqia_app/jobs/",)) == []
    assert bare_dict_returns("services") == {
        "results.py:a": "dict",
        "results.py:b": "list[dict[str, str]]",
        "results.py:c": "dict[str, object] | None",
        "results.py:d": "dict[int, dict]",
        "results.py:R.view": "list[dict]",
    }
    (app / "services" / "errors.py").write_text("class AppError(Exception):\n    pass\n")
    (app / "services" / "feature").mkdir()
    (app / "services" / "feature" / "long.py").write_text("x = 1\n" * 11)
    assert misplaced_services(app / "services") == [
        "meiqia_app/services/backup.py",
        "meiqia_app/services/m.py",
        "meiqia_app/services/results.py",
    ]
    assert long_services(app / "services", 10, {}) == ["meiqia_app/services/feature/long.py: 11 lines"]
    assert long_services(app / "services", 10, {"meiqia_app/services/feature/long.py": "a reason"}) == []
