"""How soon an agent's browser shows results after the last keystroke (CUST-1, not a test).

    .venv/bin/python bench/keystroke_latency.py [--data-dir /work/bench-data/1m] [--runs 20]

Starts the real app (prod build, one worker) on an existing database — by
default the 1,000,000-customer one ``bench/search.py`` seeds — logs in as the
agent in Chromium and types real fragments (Chinese name parts, pinyin
initials, phone fragments) into the search box at a typist's pace (90 ms
between keys). In the page, a listener stamps the last change of the search box (its
``input`` event: Chinese characters are typed without a keydown) and a
MutationObserver stamps the first change of the result table after it; the
difference is what the person waits. It includes the debounce (the request
leaves only when typing pauses), the websocket round trip, the query, and
React's render. Prints the median and p95 per kind.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import CHROMIUM, CHROMIUM_ARGS, login, running_app  # noqa: E402

WATCH = """
() => {
  window.__lastKey = 0; window.__shown = 0;
  // 'input', not 'keydown': characters typed as text (Chinese, or any IME
  // commit) change the box without a keydown; every change fires 'input'.
  document.addEventListener('input', (e) => {
    if (e.target && e.target.id === 'customer-search') { window.__lastKey = performance.now(); window.__shown = 0; }
  }, true);
  const inResults = (node) => node && node.nodeType === 1
    ? !!node.closest('#customer-table, #customers-empty') || !!node.querySelector?.('#customer-table, #customers-empty')
    : !!node?.parentElement?.closest('#customer-table, #customers-empty');
  new MutationObserver((records) => {
    if (!window.__lastKey || window.__shown) return;
    if (records.some(r => inResults(r.target) || [...r.addedNodes].some(inResults))) {
      window.__shown = performance.now();
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}
"""


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(pct / 100 * len(ordered) + 0.5)) - 1))]


def fragments(db_file: Path, runs: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True) as db:
        sample = db.execute(
            "SELECT name, name_initials, phone FROM customer WHERE status = 'active' "
            "AND phone IS NOT NULL AND length(name) >= 2 ORDER BY random() LIMIT ?",
            (runs * 3,),
        ).fetchall()
    rng.shuffle(sample)
    return {
        "name (2 chars)": [row[0][:2] for row in sample[:runs]],
        "pinyin initials": [row[1][:3] for row in sample[runs : 2 * runs] if row[1]],
        "phone fragment (7 digits)": [row[2][-7:] for row in sample[2 * runs : 3 * runs]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default="/work/bench-data/1m")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    cases = fragments(data_dir / "meiqia.db", args.runs, args.seed)

    from playwright.sync_api import sync_playwright

    with (
        running_app(data_dir, seed_customers=None, extra_env={"MEIQIA_SCHEDULER": "0"}) as app,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(base_url=app.url, locale="zh-CN", viewport={"width": 1400, "height": 900})
        context.set_default_timeout(30_000)
        page = context.new_page()
        login(page, app, "agent")
        page.locator("#customer-table .customer-row").first.wait_for()
        page.evaluate(WATCH)
        box = page.locator("#customer-search")
        print(f"app at {app.url} on {data_dir} — {args.runs} searches per kind, 90 ms between keys")
        for kind, texts in cases.items():
            waits = []
            for text in texts:
                box.fill("")
                page.wait_for_timeout(800)  # the emptied box's own search has come and gone
                page.evaluate("() => { window.__lastKey = 0; window.__shown = 0; }")
                box.press_sequentially(text, delay=90)
                page.wait_for_function("() => window.__shown > 0", timeout=30_000)
                waits.append(page.evaluate("() => window.__shown - window.__lastKey"))
            print(
                f"{kind:<28} n={len(waits):3}  p50={statistics.median(waits):6.0f} ms  "
                f"p95={percentile(waits, 95):6.0f} ms  max={max(waits):6.0f} ms"
            )
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
