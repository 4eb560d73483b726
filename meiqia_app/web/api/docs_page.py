"""``/api/docs``: the OpenAPI document as one self-contained HTML page.

Rendered on the server from the same document ``/api/v1/openapi.json``
serves, with inline CSS and no script: nothing is loaded from a CDN (or from
anywhere), so the page works offline and behind strict proxies, and the
Content-Security-Policy forbids anything else.
"""

from __future__ import annotations

import html
import json
from typing import Any

from meiqia_app.web.api import problems

INTRO_MARKDOWN = (
    "Authenticate with `Authorization: Bearer <key>` (keys: `python -m meiqia_app create-api-key` or "
    "/admin/api-keys). Errors are RFC 9457 `application/problem+json`. POSTs accept `Idempotency-Key`. "
    "Rate limit per key with `Retry-After` on 429. See docs/api.md in the repository."
)

STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;margin:0;color:#1c2024;background:#fff}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:26px}h2{margin-top:40px;border-bottom:1px solid #ddd;padding-bottom:4px}
.op{border:1px solid #e0e0e0;border-radius:8px;margin:16px 0;padding:12px 16px}
.method{display:inline-block;min-width:64px;font-weight:700;font-family:monospace;padding:2px 8px;border-radius:4px;color:#fff;text-align:center}
.get{background:#1f6feb}.post{background:#2da44e}.put{background:#9a6700}.patch{background:#8250df}.delete{background:#cf222e}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}
pre{background:#f6f8fa;padding:10px;border-radius:6px;overflow:auto;max-height:420px}
table{border-collapse:collapse;width:100%;margin:8px 0}th,td{border:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}details{margin:6px 0}summary{cursor:pointer}nav a{margin-right:12px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _resolve(document: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        return document.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[1], schema)
    return schema


def _type_text(document: dict, schema: dict) -> str:
    if not isinstance(schema, dict):
        return ""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_type_text(document, option) for option in schema["anyOf"])
    if "allOf" in schema:
        return " & ".join(_type_text(document, option) for option in schema["allOf"])
    if "enum" in schema:
        return " | ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"], ensure_ascii=False)
    kinds = schema.get("type", "object")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    texts = [f"array of {_type_text(document, schema.get('items', {}))}" if k == "array" else str(k) for k in kinds]
    return " | ".join(texts)


def _schema_table(document: dict, schema: dict) -> str:
    schema = _resolve(document, schema)
    properties = schema.get("properties")
    if not properties:
        return f"<p><code>{_e(_type_text(document, schema))}</code></p>"
    required = set(schema.get("required", []))
    rows = []
    for name, prop in properties.items():
        description = prop.get("description", "") if isinstance(prop, dict) else ""
        rows.append(
            f"<tr><td><code>{_e(name)}</code>{' *' if name in required else ''}</td>"
            f"<td><code>{_e(_type_text(document, prop))}</code></td><td>{_e(description)}</td></tr>"
        )
    return "<table><tr><th>field</th><th>type</th><th>meaning</th></tr>" + "".join(rows) + "</table>"


def _operation(document: dict, path: str, method: str, op: dict) -> str:
    anchor = f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", "")
    parts = [
        f'<div class="op" id="{_e(anchor)}"><span class="method {_e(method)}">{_e(method.upper())}</span> '
        f"<code>{_e(path)}</code> — {_e(op.get('summary', ''))}"
    ]
    parameters = op.get("parameters", [])
    if parameters:
        rows = "".join(
            f"<tr><td><code>{_e(p['name'])}</code>{' *' if p.get('required') else ''}</td><td>{_e(p['in'])}</td>"
            f"<td><code>{_e(_type_text(document, p.get('schema', {})))}</code></td>"
            f"<td>{_e(p.get('description', ''))}</td></tr>"
            for p in parameters
        )
        parts.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>meaning</th></tr>" + rows + "</table>")
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body:
        parts.append("<details><summary>Request body</summary>" + _schema_table(document, body))
        resolved = _resolve(document, body)
        for name, prop in resolved.get("properties", {}).items():
            items = prop.get("items", {}) if isinstance(prop, dict) else {}
            if isinstance(items, dict) and items.get("properties"):
                parts.append(f"<p><code>{_e(name)}[]</code>:</p>" + _schema_table(document, items))
        parts.append("</details>")
    answers = []
    for status, response in op.get("responses", {}).items():
        content = response.get("content", {})
        media = next(iter(content), "")
        schema = content.get(media, {}).get("schema", {}) if media else {}
        answers.append(
            f"<tr><td>{_e(status)}</td><td>{_e(response.get('description', ''))}</td>"
            f"<td><code>{_e(media)}</code> {_e(_type_text(document, schema) if schema else '')}</td></tr>"
        )
    parts.append(
        "<details><summary>Responses</summary><table><tr><th>status</th><th>meaning</th><th>body</th></tr>"
        + "".join(answers)
        + "</table></details></div>"
    )
    return "".join(parts)


def render(document: dict) -> str:
    info = document.get("info", {})
    by_tag: dict[str, list[str]] = {}
    for path, operations in document.get("paths", {}).items():
        for method, op in operations.items():
            tag = (op.get("tags") or ["other"])[0]
            by_tag.setdefault(tag, []).append(_operation(document, path, method, op))
    sections = []
    for tag in by_tag:
        sections.append(f'<h2 id="tag-{_e(tag)}">{_e(tag)}</h2>' + "".join(by_tag[tag]))
    problem_rows = "".join(
        f'<tr id="problem-{_e(name)}"><td><code>{_e(problems.TYPE_BASE + name)}</code></td><td>{status}</td>'
        f"<td>{_e(title)}</td><td>{_e(meaning)}</td></tr>"
        for name, (status, title, meaning) in problems.PROBLEMS.items()
    )
    schemas = "".join(
        f'<details id="schema-{_e(name)}"><summary><code>{_e(name)}</code></summary>'
        f"{_schema_table(document, schema)}</details>"
        for name, schema in sorted(document.get("components", {}).get("schemas", {}).items())
    )
    nav = "".join(f'<a href="#tag-{_e(tag)}">{_e(tag)}</a>' for tag in by_tag)
    return (
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'><meta name='robots' content='noindex'>"
        f"<title>{_e(info.get('title', 'API'))}</title><style>{STYLE}</style></head><body><main>"
        f"<h1>{_e(info.get('title', 'API'))} <small>v{_e(info.get('version', ''))}</small></h1>"
        f"<p>{_e(info.get('description', ''))}</p>"
        f'<p>OpenAPI 3.1 document: <a href="/api/v1/openapi.json"><code>/api/v1/openapi.json</code></a></p>'
        f'<nav>{nav}<a href="#webhooks-signature">signature</a><a href="#problems">problems</a>'
        f'<a href="#schemas">schemas</a></nav>'
        + "".join(sections)
        + "<h2 id='webhooks-signature'>Webhook signature</h2>"
        "<p>Each delivery is a JSON POST with <code>X-Meiqia-Signature: t=&lt;unix seconds&gt;,v1=&lt;hex&gt;</code> "
        "where hex = HMAC-SHA256(secret, <code>&lt;t&gt;.&lt;raw body&gt;</code>), plus "
        "<code>X-Meiqia-Event</code>, <code>X-Meiqia-Event-Id</code> (the same on retries: de-duplicate on it) "
        "and <code>X-Meiqia-Delivery</code>. Check the signature over the raw bytes, refuse old timestamps "
        "(e.g. more than 5 minutes), answer 2xx quickly. Failed deliveries are retried with exponential "
        "backoff for 24 hours.</p>"
        '<pre>expected = hmac.new(secret, f"{t}.".encode() + raw_body, hashlib.sha256).hexdigest()\n'
        "ok = hmac.compare_digest(expected, v1)</pre>"
        "<h2 id='problems'>Problems</h2><table><tr><th>type</th><th>status</th><th>title</th><th>meaning</th></tr>"
        + problem_rows
        + "</table><h2 id='schemas'>Schemas</h2>"
        + schemas
        + "</main></body></html>"
    )
