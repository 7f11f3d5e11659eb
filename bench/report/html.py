"""One self-contained HTML file from report blocks: plots inlined as base64, tables sortable by a click.

Every text piece goes through html.escape; a Content-Security-Policy allows only this file's own
script (by hash) and inline images, so even a value that slipped through could not run code.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re

from bench.report.document import Block, Bullets, Code, Heading, Image, Inline, Paragraph, Strong, Table

_SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], index = th.cellIndex;
    var numeric = th.classList.contains('num');
    var ascending = th.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    function key(row) {
      var text = row.cells[index].textContent;
      if (!numeric) { return text.toLowerCase(); }
      var value = parseFloat(text.replace(/[,$]/g, ''));
      return isNaN(value) ? null : value;
    }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === y) { return 0; }
      if (x === null) { return 1; }  /* missing values last, either direction */
      if (y === null) { return -1; }
      return (x < y ? -1 : 1) * (ascending ? 1 : -1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #1b1f24; }
h1 { font-size: 1.8rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
nav { background: #f6f8fa; padding: .5rem 1rem; border-radius: 6px; }
nav a { margin-right: 1rem; white-space: nowrap; }
table { border-collapse: collapse; margin: .8rem 0; font-size: 13px; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: .3rem .55rem; vertical-align: top; }
th { background: #f6f8fa; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
tr:nth-child(even) td { background: #fbfcfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; } td.num { white-space: nowrap; }
img { max-width: 100%; border: 1px solid #d0d7de; margin: .5rem 0; }
code { background: #f0f2f4; padding: 0 .25rem; border-radius: 3px; }
"""


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, counter = base, 2
    while slug in used:
        slug, counter = f"{base}-{counter}", counter + 1
    used.add(slug)
    return slug


def inline(part: Inline) -> str:
    if isinstance(part, Strong):
        return f"<strong>{html.escape(part.text)}</strong>"
    if isinstance(part, Code):
        return f"<code>{html.escape(part.text)}</code>"
    return html.escape(str(part))


def _table(table: Table) -> str:
    head = "".join(
        f'<th class="num">{html.escape(h)}</th>' if numeric else f"<th>{html.escape(h)}</th>"
        for h, numeric in zip(table.headers, table.numeric, strict=True)
    )
    classes = ['<td class="num">' if numeric else "<td>" for numeric in table.numeric]
    body = "\n".join(
        "<tr>" + "".join(f"{opening}{inline(cell)}</td>" for opening, cell in zip(classes, row, strict=True)) + "</tr>"
        for row in table.rows
    )
    return f'<table class="sortable">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def _block(block: Block, anchors: dict[int, str]) -> str:
    if isinstance(block, Heading):
        anchor = anchors.get(id(block))
        attribute = f' id="{anchor}"' if anchor else ""
        return f"<h{block.level}{attribute}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return "<p>" + "".join(inline(p) for p in block.parts) + "</p>"
    if isinstance(block, Bullets):
        items = "".join("<li>" + "".join(inline(p) for p in item.parts) + "</li>" for item in block.items)
        return f"<ul>{items}</ul>"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Image):
        data = base64.b64encode(block.png).decode("ascii")
        return f'<figure><img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}"></figure>'
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_html(blocks: list[Block], title: str) -> str:
    used: set[str] = set()
    anchors = {id(b): _slug(b.text, used) for b in blocks if isinstance(b, Heading) and b.level == 2}
    nav = " ".join(
        f'<a href="#{anchors[id(b)]}">{html.escape(b.text)}</a>'
        for b in blocks
        if isinstance(b, Heading) and id(b) in anchors
    )
    script_hash = base64.b64encode(hashlib.sha256(_SORT_SCRIPT.encode()).digest()).decode()
    policy = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'"
    # The navigation goes under the title (the first block, when it is the level-1 heading).
    title_blocks = blocks[:1] if blocks and isinstance(blocks[0], Heading) and blocks[0].level == 1 else []
    head = "\n".join(_block(block, anchors) for block in title_blocks)
    body = "\n".join(_block(block, anchors) for block in blocks[len(title_blocks) :])
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"{head}\n<nav>{nav}</nav>\n{body}\n<script>{_SORT_SCRIPT}</script>\n</body>\n</html>\n"
    )
