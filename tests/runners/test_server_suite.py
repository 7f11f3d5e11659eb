"""The server backend as a suite says it: its `server:` block (validated through the backend's registered model,
its fields carried by the server cells' knobs), the plan's word when llama-server is not built, and the report's
"served by" column that puts engine and server rows of one model, quantization and `parallel` side by side."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.errors import BenchError
from bench.hardware import detect
from bench.plan import plan_cells
from bench.report.build import load_report_data
from bench.report.markdown import render_markdown
from bench.report.sections import capacity, devices
from bench.runners.registry import quantization_catalog
from bench.suite import axes, expand, parse_suite
from tests.conftest import quick_suite_yaml

FIXTURES = Path(__file__).parents[1] / "fixtures" / "report"
URL = "http://127.0.0.1:8080/v1"


def _suite(**sections: str):  # noqa: ANN202
    text = quick_suite_yaml(**{"backends": "backends: [llamacpp, server]", **sections})
    return parse_suite(text, Path("suite.yaml"), quantization_catalog())


def test_the_block_sets_the_server_cells_only() -> None:
    suite = _suite(server=f"server: {{url: '{URL}', model: my-model, api_key_env: MY_KEY}}")
    cells = {c.backend: c for c in expand(suite)}
    server, engine = cells["server"], cells["llamacpp"]
    assert (server.knob("server_url"), server.knob("server_model"), server.knob("server_api_key_env")) == (
        URL,
        "my-model",
        "MY_KEY",
    )
    assert engine.knob("server_url") is None  # the engine's cells do not take the server's knobs
    without = {c.backend: c for c in expand(_suite())}["server"]
    assert not without.setting("server_url") and without.cell_id != server.cell_id  # bench starts llama-server


@pytest.mark.parametrize(
    ("block", "line", "message"),
    [
        (
            f"server: {{url: '{URL}', modle: x}}",
            "field `server.modle`: unknown key 'modle'; `server:` takes url, model, api_key_env",
            "",
        ),
        ("server: {model: x}", "field `server.url`: Field required", ""),
        ("server: {url: 'ftp://host/v1'}", "field `server.url`: expected an http(s) base URL", "(got 'ftp://host/v1')"),
        ("server: {url: 'http://me:secret@host/v1'}", "credentials do not belong in the URL", ""),
        ("server: [1]", "field `server`: Input should be a valid dictionary", ""),
    ],
)
def test_a_wrong_block_is_named_with_file_line_and_field(block: str, line: str, message: str) -> None:
    with pytest.raises(BenchError) as raised:
        _suite(server=block)
    text = raised.value.message
    assert "suite.yaml:" in text and line in text and message in text
    assert "secret" not in text  # a password written in the URL is not echoed back


def test_a_block_for_a_backend_the_suite_does_not_measure_is_refused() -> None:
    with pytest.raises(
        BenchError, match=r"field `server`: `server:` configures backend server, which backends does not"
    ):
        _suite(backends="backends: [llamacpp]", server=f"server: {{url: '{URL}'}}")


def test_the_blocks_knobs_are_said_in_the_block_only() -> None:
    with pytest.raises(BenchError, match=r"field `knobs.server_url`: server_url is set in the suite's `server:` block"):
        _suite(knobs=f"knobs: {{server_url: ['{URL}']}}")
    with pytest.raises(BenchError, match=r"unknown axis 'server_model'"):
        _suite(exclude="exclude: [{server_model: x}]")
    assert "server_url" not in axes() and "endpoint" in axes()
    with pytest.raises(BenchError, match=r"field `blocks`: unknown key 'blocks'; a backend's block is written by"):
        _suite(blocks=f"blocks: {{server: {{url: '{URL}'}}}}")


def test_plan_says_llama_server_is_not_built_and_how_to_build_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_LLAMA_SERVER", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent-cache")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    fingerprint = detect()
    planned = {p.cell.backend: p for p in plan_cells(_suite(), fingerprint)}
    assert planned["server"].skip_reason.startswith(
        "llama-server is not built: build it once with `BENCH_BUILD_SERVER=1 ./scripts/install.sh`"
    )
    assert planned["llamacpp"].runnable
    named = {p.cell.backend: p for p in plan_cells(_suite(server=f"server: {{url: '{URL}'}}"), fingerprint)}
    assert named["server"].runnable  # a server the suite names needs no llama-server here
    monkeypatch.setenv("BENCH_LLAMA_SERVER", "/nonexistent/llama-server")
    planned = {p.cell.backend: p for p in plan_cells(_suite(), fingerprint)}
    assert planned["server"].skip_reason.startswith("BENCH_LLAMA_SERVER=/nonexistent/llama-server is not a file")


def test_bench_plan_prints_the_reason(write_suite, tmp_path: Path) -> None:  # noqa: ANN001
    suite = write_suite(quick_suite_yaml(backends="backends: [server]"))
    env = {**os.environ, "BENCH_LLAMA_SERVER": str(tmp_path / "absent"), "COLUMNS": "400"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", "plan", str(suite)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"BENCH_LLAMA_SERVER={tmp_path / 'absent'} is not a file" in done.stdout


def _engine_and_server_rows(tmp_path: Path) -> Path:
    """The capacity fixture's rows, and the same again as llama-server's rows (another backend, other figures)."""
    engine = pd.read_csv(FIXTURES / "capacity.csv", dtype=str, keep_default_na=False)
    server = engine.assign(
        backend="server",
        served_by="llama-server",
        cell_id="s" + engine["cell_id"].str[1:],
        decode_tok_s_mean=(pd.to_numeric(engine["decode_tok_s_mean"], errors="coerce") * 0.9).astype(str),
    )
    path = tmp_path / "both.csv"
    pd.concat([engine, server]).to_csv(path, index=False)
    return path


def _table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|") and "---" not in line]


def test_report_shows_engine_and_server_side_by_side(tmp_path: Path) -> None:
    analysis = load_report_data([_engine_and_server_rows(tmp_path)], suite_path=FIXTURES / "capacity.yaml")
    per_device = _table_lines(render_markdown(devices.build(analysis), "plots"))
    header = [c.strip() for c in per_device[0].strip("|").split("|")]
    served, sequences = header.index("served by"), header.index("sequences")
    body = [[c.strip() for c in line.strip("|").split("|")] for line in per_device[1 : 1 + 6]]
    # engine then llama-server at each number of sequences: the serving layer's cost row beside row
    assert [(r[sequences], r[served]) for r in body] == [
        ("1", "engine"), ("1", "llama-server"), ("4", "engine"), ("4", "llama-server"),
        ("16", "engine"), ("16", "llama-server"),
    ]  # fmt: skip
    setups = _table_lines(render_markdown(capacity.build(analysis), "plots"))
    header = [c.strip() for c in setups[0].strip("|").split("|")]
    pairs = [[c.strip() for c in line.strip("|").split("|")] for line in setups[1:3]]
    assert [r[header.index("served by")] for r in pairs] == ["engine", "llama-server"]
    for column in ("device", "depth (tok)"):  # the same setup and depth, served two ways
        assert pairs[0][header.index(column)] == pairs[1][header.index(column)]
