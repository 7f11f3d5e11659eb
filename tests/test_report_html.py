"""The HTML report: one self-contained, escaped, sortable file that renders in headless Chromium."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bench.report import write_report
from bench.report.build import SECTIONS, load_report_data
from bench.report.html import _SORT_SCRIPT, render_html

FIXTURES = Path(__file__).parent / "fixtures" / "report"
ALL_FIXTURES = ["ladder-quality.csv", "host-a.csv", "host-b.csv", "hostile.csv"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
SCRIPT = Path(__file__).parent.parent / "scripts" / "screenshot_report.sh"


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of <script> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    write_report([FIXTURES / f for f in ALL_FIXTURES], out, fmt="html", suite_path=FIXTURES / "procurement.yaml")
    return out


def test_html_is_one_self_contained_file(report_html: Path) -> None:
    parser = _Tags()
    parser.feed(report_html.read_text(encoding="utf-8"))
    images = [attrs for tag, attrs in parser.tags if tag == "img"]
    assert len(images) == 3
    for attrs in images:
        src = attrs["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    for tag, attrs in parser.tags:  # nothing fetched from anywhere: no external src, href, stylesheet
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not value or value.startswith(("data:", "#")), (tag, name, value)
    assert not list(report_html.parent.glob("*-plots"))  # no plot folder beside an HTML report


def test_html_escapes_values_and_allows_only_its_own_script(report_html: Path) -> None:
    text = report_html.read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(text)
    assert [tag for tag, _ in parser.tags].count("script") == 1
    assert parser.scripts == [_SORT_SCRIPT]
    assert "<b>host</b>" not in text and "alert(1)</script>" not in text
    assert html.escape("evil|model\nname <script>alert(1)</script>") in text
    policy = next(
        attrs["content"]
        for tag, attrs in parser.tags
        if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"
    )
    digest = base64.b64encode(hashlib.sha256(_SORT_SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy and "default-src 'none'" in policy


def test_html_has_every_section_and_sortable_tables(report_html: Path) -> None:
    text = report_html.read_text(encoding="utf-8")
    headings = re.findall(r'<h2 id="[a-z-]+">([^<]+)</h2>', text)
    assert headings == [section.TITLE for section in SECTIONS]
    assert text.count('<table class="sortable">') >= 10
    assert '<th class="num">decode per user (tok/s)</th>' in text
    nav = re.search(r"<nav>(.*?)</nav>", text, flags=re.S)
    assert nav is not None and nav.group(1).count('<a href="#') == len(SECTIONS)


def test_html_and_markdown_say_the_same(tmp_path: Path) -> None:
    analysis = load_report_data([FIXTURES / "ladder-quality.csv"], suite_path=FIXTURES / "procurement.yaml")
    markdown = write_report(
        [FIXTURES / "ladder-quality.csv"], tmp_path / "r.md", suite_path=FIXTURES / "procurement.yaml"
    ).read_text()
    from bench.report.build import build_document

    page = render_html(build_document(analysis), "t")
    for figure in ("$0.155", "gpu-box / gpu0", "KLD 0.3480 &gt; 0.05 allowed", "18,000.0 ± 150.0"):
        assert figure.replace("&gt;", ">").replace("$", "\\$") in markdown and figure in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(report_html: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        ["bash", str(SCRIPT), str(report_html), str(shot), "1200,1600"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (1600, 1200)
    dark = (pixels[..., :3].mean(axis=2) < 0.5).mean()
    assert 0.01 < dark < 0.5  # text and tables drawn, not a blank or an error page
    assert np.unique(pixels[..., :3].reshape(-1, 3), axis=0).shape[0] > 50  # plots and styling, not plain text


def test_screenshot_script_explains_a_missing_report(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "none.html")], capture_output=True, text=True)
    assert done.returncode == 2 and "not found" in done.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_served_capacity_and_its_curves_render_in_headless_chromium(tmp_path: Path) -> None:
    """A report of load points (issue 25): its Served capacity section carries the three curves as an image
    inside the page, and the browser draws them (the section alone, so the curves are in the screenshot: their
    lines are matplotlib's first colour, which nothing else on the page uses)."""
    from bench.report.sections import served
    from tests.test_report_served import _rows

    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: t\nmodels: [{id: m, source: /nonexistent.gguf}]\nbackends: [server]\n"
        "slo: {max_ttft_ms: 2000, min_user_tok_s: 10}\n"
    )
    csv = _rows(tmp_path)
    whole = write_report([csv], tmp_path / "served.html", fmt="html", suite_path=suite).read_text(encoding="utf-8")
    alt = "TTFT, time per output token and throughput against the arrival rate"
    section = whole.split('<h2 id="served-capacity">', 1)[1].split("<h2 ", 1)[0]
    assert f'<img alt="{alt}" src="data:image/png;base64,' in section
    page = tmp_path / "section.html"
    page.write_text(render_html(served.build(load_report_data([csv], suite_path=suite)), "t"), encoding="utf-8")
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        ["bash", str(SCRIPT), str(page), str(shot), "1200,2000"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    first_colour = np.array([0x1F, 0x77, 0xB4]) / 255  # matplotlib's C0: the setup's curves
    assert (np.abs(pixels - first_colour).max(axis=2) < 0.08).sum() > 500
