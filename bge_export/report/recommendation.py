"""The recommendation (bge_export/folder/recommend.py) as text: `bge-export inspect`'s deploy block, and the
"Which file to deploy" section of the validation report (Markdown, HTML) and of the model card."""

from __future__ import annotations

import html
from typing import Any, Mapping

from bge_export.folder.recommend import deploy_runtimes


def _rows(recommended: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for runtime in deploy_runtimes():
        record = recommended.get(runtime)
        if not isinstance(record, dict):
            continue
        artifact = record.get("artifact") or "none passed"
        why = record.get("reason", "")
        unverified = [u["artifact"] for u in record.get("unverified_candidates") or []]
        listed = [path for path in unverified if path not in why]  # a none-passed reason names them already
        if listed:
            why += f" Unverified candidates, not recommended: {', '.join(listed)}."
        rows.append((runtime, artifact, why))
    return rows


def render_text(recommended: Mapping[str, Any] | None) -> list[str]:
    """Plain lines for `bge-export inspect`."""
    rows = _rows(recommended or {})
    if not rows:
        return ["  (no recommendation recorded)"]
    width = max(len(r[0]) for r in rows)
    out = []
    for runtime, artifact, why in rows:
        out.append(f"  {runtime.ljust(width)}  {artifact}")
        out.append(f"  {' ' * width}    why: {why}")
    return out


def render_markdown(recommended: Mapping[str, Any] | None) -> list[str]:
    """The report's "Which file to deploy" section (Markdown lines)."""
    rows = _rows(recommended or {})
    if not rows:
        return []
    out = ["## Which file to deploy", "", "| runtime | artifact | why |", "|---|---|---|"]
    out += [f"| {runtime} | {'`' + artifact + '`' if artifact != 'none passed' else artifact} | "
            f"{why.replace('|', '/')} |" for runtime, artifact, why in rows]
    orders = _orders(recommended or {})
    if orders:
        out += ["", "The order by kind, where speed did not decide:", ""]
        out += [f"- {runtime}: {order}" for runtime, order in orders]
    return out + [""]


def _orders(recommended: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(runtime, its by-kind preference order) for the records decided by kind: the detail their reasons leave
    out."""
    return [(runtime, str(record.get("order_by_kind"))) for runtime in deploy_runtimes()
            if isinstance(record := recommended.get(runtime), dict) and record.get("basis") == "by kind"
            and record.get("order_by_kind")]


def render_html(recommended: Mapping[str, Any] | None) -> str:
    """The report's "Which file to deploy" section (HTML)."""
    rows = _rows(recommended or {})
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(runtime)}</td><td><code>{html.escape(artifact)}</code></td><td>{html.escape(why)}</td></tr>"
        for runtime, artifact, why in rows
    )
    orders = "".join(f"<li>{html.escape(runtime)}: {html.escape(order)}</li>" for runtime, order in _orders(recommended or {}))
    return ("<h2>Which file to deploy</h2><table><thead><tr><th>runtime</th><th>artifact</th><th>why</th></tr>"
            f"</thead><tbody>{body}</tbody></table>"
            + (f"<p>The order by kind, where speed did not decide:</p><ul>{orders}</ul>" if orders else ""))
