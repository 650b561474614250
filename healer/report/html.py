"""The report as one self-contained HTML page: inline CSS, no scripts, the log escaped."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence

from healer.report._doc import Block, Code, Heading, Inline, Items, Para, Picture, Table, parts
from healer.report._postmortem import DEFAULT_TITLE, postmortem_blocks
from healer.report.results import Postmortem
from healer.report.svg import incident_svg

__all__ = ["render_html", "to_html"]

_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:80rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.45;color:#1b1b1b}"
    "table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem;width:100%}"
    "th,td{border:1px solid #bbb;padding:.25rem .5rem;text-align:left;vertical-align:top;"
    "overflow-wrap:break-word}"
    "th{background:#eee}code{background:#f3f3f3;padding:0 .2rem}"
    "td code{overflow-wrap:anywhere}"
    "pre{background:#f6f6f6;border:1px solid #ddd;padding:.5rem;white-space:pre-wrap;"
    "word-break:break-all}h2{border-bottom:1px solid #ccc;margin-top:2rem}"
    "svg.timeline{max-width:100%;height:auto;display:block;margin:.5rem 0 1rem}"
    "nav ul{columns:2;font-size:.95rem}"
)
# Tables wrap their cells (table width 100 %, code breaks anywhere) and the timelines
# scale down: nothing is wider than the page at 1280 px (tests/test_report_browser.py).


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
    blocks = postmortem_blocks(
        pm,
        title=title,
        rules_digest=rules_digest,
        inputs=inputs,
        recorded_rules=recorded_rules,
    )
    body = to_html(blocks, contents=True)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{body}{appendix}</body>\n</html>\n"
    )


def to_html(blocks: Iterable[Block], *, contents: bool = False) -> str:
    """The blocks as HTML; ``contents``: a table of contents of the ``<h2>`` sections
    after the first heading, each heading with an anchor."""
    blocks = list(blocks)
    ids = _anchors(blocks)
    out: list[str] = []
    for n, block in enumerate(blocks):
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            anchor = f' id="{ids[n]}"' if n in ids else ""
            out.append(f"<h{level}{anchor}>{_inline(block.text)}</h{level}>")
            if contents and level == 1 and n == 0:
                out.append(_contents(blocks, ids))
        elif isinstance(block, Picture):
            out.append(incident_svg(block.incident))
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


def _anchors(blocks: list[Block]) -> dict[int, str]:
    """An id for each ``<h2>``/``<h3>``, unique in the page."""
    ids: dict[int, str] = {}
    seen: set[str] = set()
    for n, block in enumerate(blocks):
        if isinstance(block, Heading) and block.level in (2, 3):
            text = "".join(p.text if isinstance(p, Code) else p for p in block.text)
            base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
            anchor, k = base, 2
            while anchor in seen:
                anchor, k = f"{base}-{k}", k + 1
            seen.add(anchor)
            ids[n] = anchor
    return ids


def _contents(blocks: list[Block], ids: dict[int, str]) -> str:
    items = "".join(
        f'<li><a href="#{ids[n]}">{_inline(b.text)}</a></li>'
        for n, b in enumerate(blocks)
        if isinstance(b, Heading) and b.level == 2 and n in ids
    )
    return f'<nav aria-label="contents"><strong>Contents</strong><ul>{items}</ul></nav>'


def _inline(inlines: Iterable[Inline]) -> str:
    return "".join(
        f"<code>{html.escape(p.text)}</code>" if isinstance(p, Code) else html.escape(p)
        for p in inlines
    )
