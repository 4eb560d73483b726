"""Every audit action the code can write, read off the source (for test_audit_sentences).

An action reaches the log through ``audit.record`` / ``audit.record_now`` /
``audit.record_refusal`` (what happened, or a refusal) or through
``rbac.require`` / ``rbac.refuse`` (refusals only, with the action named in
the call). The scan resolves string literals, ``a if x else b``, and a
function parameter passed on by a helper (``_require_note_access(actor,
"note.update", …)``) from the helper's calls in the same module. An action
built at run time (an f-string) must be listed in ``DYNAMIC`` with what it
can become; a new one the scan cannot resolve fails the test, so nothing
slips through unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "meiqia_app"

RECORDERS = ("record", "record_now", "record_many", "record_refusal", "refuse_counted")
# CustomerAccess's by-id loaders, record_customer and not_found, check_ticked_in_reach and the
# cleanup's skip_unreachable_ticked audit a refusal under the action they are given
# (services/customers/access.py, services/customers/selection.py, services/cleanup/criteria.py).
REFUSERS = (
    "require",
    "refuse",
    "not_found",
    "load",
    "load_row",
    "load_for_claim",
    "record_customer",
    "check_ticked_in_reach",
    "skip_unreachable_ticked",
)
# Modules that forward an ``action`` parameter of their own (they are the recorders).
FORWARDERS = (
    "meiqia_app/services/audit/log.py",
    "meiqia_app/services/identity/rbac.py",
    "meiqia_app/services/customers/access.py",
    "meiqia_app/services/customers/selection.py",
    "meiqia_app/services/identity/throttling.py",  # refuse_counted(session, actor, action, …)
    "meiqia_app/services/cleanup/criteria.py",
)


def _dynamic() -> dict[tuple[str, str], tuple[str, ...]]:
    from meiqia_app.models.customer import STATUS_ARCHIVED, STATUS_TRASHED
    from meiqia_app.services.cleanup import criteria as cleanup_criteria
    from meiqia_app.services.tags import catalog as tags

    return {
        ("meiqia_app/services/cleanup/criteria.py", "f'cleanup.{verb}'"): tuple(
            f"cleanup.{verb}" for verb in (*cleanup_criteria.ACTIONS, "dry_run")
        ),
        ("meiqia_app/services/cleanup/actions.py", "f'cleanup.{action}'"): tuple(
            f"cleanup.{action}" for action in (*cleanup_criteria.ACTIONS, "purge")
        ),
        ("meiqia_app/services/cleanup/trash.py", "f'cleanup.restore_{status}'"): (
            f"cleanup.restore_{STATUS_ARCHIVED}",
            f"cleanup.restore_{STATUS_TRASHED}",
        ),
        ("meiqia_app/services/tags/catalog.py", "f\"tag.bulk_{(action if action in BULK_ACTIONS else 'invalid')}\""): (
            *(f"tag.bulk_{a}" for a in tags.BULK_ACTIONS),
            "tag.bulk_invalid",
        ),
        ("meiqia_app/services/tags/catalog.py", "f'tag.bulk_{action}'"): tuple(
            f"tag.bulk_{a}" for a in tags.BULK_ACTIONS
        ),
    }


def _callee(node: ast.Call) -> tuple[str | None, list[ast.expr]]:
    """(function name, positional args); ``to_thread(audit.record_refusal, actor, "x")`` counts too."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if node.args and name in ("to_thread", "run_in_thread", "_call"):
        inner = node.args[0]
        inner_name = inner.attr if isinstance(inner, ast.Attribute) else getattr(inner, "id", None)
        if inner_name in RECORDERS + REFUSERS:
            return inner_name, list(node.args[1:])
    return name, list(node.args)


def _action_expr(name: str, args: list[ast.expr], node: ast.Call) -> ast.expr | None:
    for keyword in node.keywords:
        if keyword.arg == "action":
            return keyword.value
    position = {
        "record": 2,
        "record_now": 1,
        "record_many": 2,
        "refuse_counted": 2,
        "record_refusal": 1,
        "refuse": 1,
        "not_found": 1,
        "record_customer": 4,
        "check_ticked_in_reach": 2,
        "skip_unreachable_ticked": 2,
    }.get(name)
    return args[position] if position is not None and len(args) > position else None


class _Module:
    def __init__(self, path: Path):
        self.rel = str(path.relative_to(ROOT))
        self.tree = ast.parse(path.read_text(encoding="utf-8"))
        self.parents: dict[ast.AST, ast.AST] = {}
        for parent in ast.walk(self.tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[child] = parent
        self.functions = {
            n.name: n for n in ast.walk(self.tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        # Module-level string constants (AUDIT_ACTION = "customer.consent").
        self.constants = {
            target.id: n.value.value
            for n in self.tree.body
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
            for target in n.targets
            if isinstance(target, ast.Name)
        }

    def enclosing_function(self, node: ast.AST):
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                return node
        return None

    def calls_of(self, function_name: str):
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call):
                name, args = _callee(node)
                if name == function_name:
                    yield node, args


def _resolve(module: _Module, expr: ast.expr, at: ast.AST, unresolved: list[str], depth: int = 0) -> set[str]:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return {expr.value}
    if isinstance(expr, ast.IfExp):
        return _resolve(module, expr.body, at, unresolved, depth) | _resolve(module, expr.orelse, at, unresolved, depth)
    source = ast.unparse(expr)
    dynamic = _dynamic().get((module.rel, source))
    if dynamic is not None:
        return set(dynamic)
    function = module.enclosing_function(at)
    if isinstance(expr, ast.Name) and expr.id in module.constants:
        return {module.constants[expr.id]}
    if isinstance(expr, ast.Name) and function is not None and depth < 3:
        params = [a.arg for a in function.args.posonlyargs + function.args.args]
        kwonly = [a.arg for a in function.args.kwonlyargs]
        if expr.id in params or expr.id in kwonly:
            found: set[str] = set()
            for call, args in module.calls_of(function.name):
                value = next((k.value for k in call.keywords if k.arg == expr.id), None)
                if value is None and expr.id in params and params.index(expr.id) < len(args):
                    value = args[params.index(expr.id)]
                if value is not None:
                    found |= _resolve(module, value, call, unresolved, depth + 1)
            if found:
                return found
    unresolved.append(f"{module.rel}:{getattr(expr, 'lineno', '?')} {source}")
    return set()


def actions_in_code() -> tuple[dict[str, set[str]], list[str]]:
    """({action: {"record", "refusal"}}, expressions the scan could not resolve)."""
    found: dict[str, set[str]] = {}
    unresolved: list[str] = []
    for path in sorted(APP.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        module = _Module(path)
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.Call):
                continue
            name, args = _callee(node)
            if name not in RECORDERS + REFUSERS:
                continue
            expr = _action_expr(name, args, node)
            if expr is None:
                continue
            function = module.enclosing_function(node)
            if module.rel in FORWARDERS and isinstance(expr, ast.Name) and function is not None:
                continue  # require() -> record_refusal(action): the callers of require() are scanned
            kind = "record" if name in ("record", "record_now", "record_many", "refuse_counted") else "refusal"
            for action in _resolve(module, expr, node, unresolved):
                found.setdefault(action, set()).add(kind)
    return found, unresolved
