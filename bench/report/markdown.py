"""Markdown (GitHub flavour) from report blocks; every text piece is escaped here."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from bench.report.document import Block, Bullets, Code, Heading, Image, Inline, Paragraph, Strong, Table
from bench.report.format import is_missing

# Characters with a markdown meaning. An underscore inside a word (Q4_K_M) means nothing in GFM, so it stays.
_SPECIAL = re.compile(r"[\\`*\[\]|~$]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_WHITESPACE = re.compile(r"[\r\n\t\v\f]+")
_TAG_OPEN = re.compile(r"<(?=[A-Za-z/!?])")
_ANY_SPECIAL = re.compile(r"[\\`*\[\]|~$_<&\r\n\t\v\f]")  # any character one of the rules above may change
_BLOCK_START = re.compile(r"^(?:[#>+=-]|\d+[.)])")  # text that would open a heading, quote or list


def escape_md(value: Any) -> str:
    """A value safe in a markdown paragraph, heading or table cell: no pipes, newlines, markup or HTML."""
    if is_missing(value):
        return ""
    text = str(value)
    if not _ANY_SPECIAL.search(text):  # most cells are plain numbers and names: one scan, nothing to change
        return text
    text = _WHITESPACE.sub(" ", text)
    # An HTML tag, comment or autolink opens with "<" and a letter, "/", "!" or "?"; "< 100" stays readable.
    text = _TAG_OPEN.sub("&lt;", text.replace("&", "&amp;"))
    return _SPECIAL.sub(lambda match: "\\" + match.group(0), text)


def _code(text: str, in_table: bool) -> str:
    text = _WHITESPACE.sub(" ", text)
    if in_table:
        text = text.replace("|", "\\|")  # GFM splits cells on | even inside code spans
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def inline(part: Inline, in_table: bool = False) -> str:
    if isinstance(part, Strong):
        text = escape_md(part.text)
        return f"**{text}**" if text else ""
    if isinstance(part, Code):
        return _code(part.text, in_table)
    return escape_md(part)


def _text_block(parts: tuple[Inline, ...]) -> str:
    text = "".join(inline(part) for part in parts)
    start = _BLOCK_START.match(text)
    if not start:
        return text
    cut = start.end() - 1  # escape the punctuation that makes it a block ("\\#", "1\\.")
    return text[:cut] + "\\" + text[cut:]


def _table(table: Table) -> str:
    lines = [
        "| " + " | ".join(escape_md(h) for h in table.headers) + " |",
        "|" + "|".join("---:" if numeric else "---" for numeric in table.numeric) + "|",
    ]
    escaped: dict[str, str] = {}  # a long table repeats its devices, models and figures: escape each once

    def cell_text(cell: Inline) -> str:
        if type(cell) is not str:
            return inline(cell, in_table=True)
        text = escaped.get(cell)
        if text is None:
            text = escaped[cell] = escape_md(cell)
        return text

    lines += ["| " + " | ".join(map(cell_text, row)) + " |" for row in table.rows]
    return "\n".join(lines)


def render_block(block: Block, image_dir: str) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + escape_md(block.text)
    if isinstance(block, Paragraph):
        return _text_block(block.parts)
    if isinstance(block, Bullets):
        return "\n".join("- " + _text_block(item.parts) for item in block.items)
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Image):
        return f"![{escape_md(block.alt)}]({quote(f'{image_dir}/{block.filename}')})"
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_markdown(blocks: list[Block], image_dir: str) -> str:
    """The whole report; images are linked as `image_dir/<file>` (relative to the report)."""
    return "\n\n".join(render_block(block, image_dir) for block in blocks) + "\n"
