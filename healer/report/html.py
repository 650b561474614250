"""The report as one self-contained HTML page: inline CSS, no scripts, the log escaped."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from healer.report._doc import Block, Code, Heading, Inline, Items, Para, Table, parts
from healer.report._postmortem import DEFAULT_TITLE, postmortem_blocks
from healer.report.results import Postmortem

__all__ = ["render_html", "to_html"]

_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:80rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.45;color:#1b1b1b}"
    "table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}"
    "th,td{border:1px solid #bbb;padding:.25rem .5rem;text-align:left;vertical-align:top}"
    "th{background:#eee}code{background:#f3f3f3;padding:0 .2rem}"
    "pre{background:#f6f6f6;border:1px solid #ddd;padding:.5rem;white-space:pre-wrap;"
    "word-break:break-all}h2{border-bottom:1px solid #ccc;margin-top:2rem}"
)


def render_html(
    pm: Postmortem,
    *,
    title: str = DEFAULT_TITLE,
    rules_digest: str = "",
    inputs: Sequence[str] = (),
    recorded_rules: Sequence[str] = (),
    appendix: str = "",
) -> str:
    """The same content as one self-contained HTML page (inline CSS, no scripts).

    ``appendix`` is trusted HTML put at the end of the body, meant for
    :func:`what_if_html`; everything taken from the logs is escaped.
    """
    body = to_html(
        postmortem_blocks(
            pm,
            title=title,
            rules_digest=rules_digest,
            inputs=inputs,
            recorded_rules=recorded_rules,
        )
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{body}{appendix}</body>\n</html>\n"
    )


def to_html(blocks: Iterable[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            out.append(f"<h{level}>{_inline(block.text)}</h{level}>")
        elif isinstance(block, Para):
            out.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Items):
            tag = "ol" if block.ordered else "ul"
            items = "".join(f"<li>{_inline(item)}</li>" for item in block.items)
            out.append(f"<{tag}>{items}</{tag}>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.head)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline(parts(c))}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            out.append(f"<pre>{html.escape(block.text)}</pre>")
    return "\n".join(out) + "\n"


def _inline(inlines: Iterable[Inline]) -> str:
    return "".join(
        f"<code>{html.escape(p.text)}</code>" if isinstance(p, Code) else html.escape(p)
        for p in inlines
    )
