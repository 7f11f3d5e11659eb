"""The report as plain data: headings, paragraphs, tables and images, rendered to markdown or HTML.

Sections build these blocks from the results; renderers escape every piece of text they are given,
so no value taken from a CSV (a model name with `|`, a newline or `<script>`) can change the layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Strong:
    """Emphasized text (a recommended or Pareto-optimal configuration)."""

    text: str


@dataclass(frozen=True)
class Code:
    """Literal text: a command, a key, a file name."""

    text: str


Inline = str | Strong | Code


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str = ""  # id for HTML links; empty: none


@dataclass(frozen=True)
class Paragraph:
    parts: tuple[Inline, ...]

    @classmethod
    def of(cls, *parts: Inline) -> Paragraph:
        return cls(tuple(parts))


@dataclass(frozen=True)
class Bullets:
    items: tuple[Paragraph, ...]


@dataclass
class Table:
    """Header labels carry the units; `numeric` columns are right-aligned and sort as numbers in HTML."""

    headers: list[str]
    rows: list[list[Inline]]
    numeric: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.numeric:
            self.numeric = [False] * len(self.headers)


@dataclass(frozen=True)
class Image:
    """A PNG plot: written beside a markdown report, inlined (base64) into an HTML one."""

    filename: str
    alt: str
    png: bytes = field(repr=False)


Block = Heading | Paragraph | Bullets | Table | Image
