"""The report as Markdown: escaping what Markdown would read as markup."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from healer.report._doc import Block, Code, Heading, Inline, Items, Para, Picture, Table, parts
from healer.report._postmortem import DEFAULT_TITLE, postmortem_blocks
from healer.report.results import Postmortem

__all__ = ["render_markdown", "to_markdown"]

_MARKUP = re.compile(r"([\\`*<\[\]])|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def render_markdown(
    pm: Postmortem,
    *,
    title: str = DEFAULT_TITLE,
    rules_digest: str = "",
    inputs: Sequence[str] = (),
    recorded_rules: Sequence[str] = (),
) -> str:
    """The postmortem as Markdown; the same postmortem always gives the same bytes."""
    return to_markdown(
        postmortem_blocks(
            pm,
            title=title,
            rules_digest=rules_digest,
            inputs=inputs,
            recorded_rules=recorded_rules,
        )
    )


def to_markdown(blocks: Iterable[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + _inline(block.text))
        elif isinstance(block, Para):
            out.append(_inline(block.text))
        elif isinstance(block, Items):
            out.append(
                "\n".join(
                    (f"{n}. " if block.ordered else "- ") + _inline(item)
                    for n, item in enumerate(block.items, 1)
                )
            )
        elif isinstance(block, Table):
            head = "| " + " | ".join(_text(h, cell=True) for h in block.head) + " |"
            rule = "|" + "|".join("---" for _ in block.head) + "|"
            rows = [
                "| " + " | ".join(_inline(parts(c), cell=True) for c in row) + " |"
                for row in block.rows
            ]
            out.append("\n".join([head, rule, *rows]))
        elif isinstance(block, Picture):
            continue  # the text timeline below says it in words
        else:
            fence = "`" * max(3, _longest_backticks(block.text, 3) + 1)
            out.append(f"{fence}text\n{block.text}\n{fence}")
    return "\n\n".join(out) + "\n"


def _longest_backticks(text: str, shortest: int = 1) -> int:
    return max((len(m) for m in re.findall(f"`{{{shortest},}}", text)), default=0)


def _text(text: str, *, cell: bool = False) -> str:
    """Escape what Markdown would read as markup; an underscore inside a word is safe."""
    out = _MARKUP.sub(lambda m: "\\" + m.group(0), text)
    return out.replace("|", "\\|") if cell else out


def _code(text: str, *, cell: bool = False) -> str:
    text = " ".join(text.split())
    if cell:
        text = text.replace("|", "\\|")
    fence = "`" * (_longest_backticks(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _inline(inlines: Iterable[Inline], *, cell: bool = False) -> str:
    return "".join(
        _code(part.text, cell=cell)
        if isinstance(part, Code)
        else _text(" ".join(part.split("\n")), cell=cell)
        for part in inlines
    )
