"""axe-core (the npm package) for the accessibility tests.

Installed once into ``.tools/axe`` (gitignored) from the npm registry with the
pinned version below when it is missing, so a fresh machine (CI) gets it the
same way as a developer's.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AXE_VERSION = "4.14.1"
AXE_DIR = ROOT / ".tools" / "axe"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
# The findings a test fails on (axe's impact levels: minor, moderate, serious, critical).
BLOCKING = ("critical", "serious")


def installed_version() -> str:
    package = AXE_DIR / "node_modules" / "axe-core" / "package.json"
    if not package.exists():
        return ""
    import json

    return str(json.loads(package.read_text()).get("version", ""))


def ensure_axe() -> Path:
    """The path of axe.min.js, installing the pinned axe-core with npm first if needed."""
    if AXE_JS.exists() and installed_version() == AXE_VERSION:
        return AXE_JS
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to install axe-core for the accessibility tests")
    AXE_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(AXE_DIR), f"axe-core@{AXE_VERSION}"],
        check=True,
        timeout=600,
    )
    return AXE_JS


def run_axe(page, axe_js: Path) -> list[dict]:
    """axe's violations on the page as it is now (rules of WCAG 2.x A/AA and best practices)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(axe_js))
    return page.evaluate(
        """async () => {
            const result = await window.axe.run(document, {resultTypes: ['violations']});
            return result.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help, count: v.nodes.length,
                targets: v.nodes.slice(0, 3).map(n => n.target.join(' ')),
            }));
        }"""
    )


def summary(violations: list[dict]) -> dict[str, int]:
    """Nodes per impact level."""
    counts: dict[str, int] = {}
    for violation in violations:
        counts[violation["impact"] or "none"] = counts.get(violation["impact"] or "none", 0) + violation["count"]
    return counts
