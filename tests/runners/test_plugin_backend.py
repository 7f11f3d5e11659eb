"""Adding a backend is one package plus one registry line: a throw-away backend, written here into a temporary
package and registered through BENCH_BACKENDS, is planned, run, written and reported like a built-in one,
and nothing in bench/ names it.

Its spec (one knob, a fixed version) and its engine (plausible timings, no model) live in separate modules,
as the built-in backends' do: the registry imports the spec while bench.suite is still loading, and the
engine (which imports bench.runners.base, and so bench.suite) only in a worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.results import read_results

BENCH_PACKAGE = Path(__file__).resolve().parents[2] / "bench"
NAME = "wombatbench"  # the backend's name, its package's and its knob's stem: found nowhere in bench/
VERSION = "9.8.7"

SPEC_MODULE = f'''
from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError
from bench.hardware.fingerprint import BackendSoftware
from bench.runners.spec import BackendSpec
from bench.suite.knobs import Knob


def _check_model(path: Path) -> None:
    if not path.is_file():
        raise BenchError(f"{NAME} model is not a file: {{path}}")


SPEC = BackendSpec(
    name="{NAME}",
    quantizations=("w1",),
    python_package="{NAME}",
    install_hint="nothing to install",
    engine="{NAME}.engine:FakeEngine",
    gives_logits=False,
    device_kinds=("cpu",),
    device_reason=lambda fingerprint, kind, index: "",
    check_model_file=_check_model,
    knobs=(Knob("{NAME}_hops", int, 1, "hops per step", "hops", "hop", allowed=(1, 2)),),
    probe_software=lambda name: BackendSoftware(name, "{VERSION}"),
)
'''

ENGINE_MODULE = """
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.runners.base import LoadInfo, SpeedEngine


class FakeEngine(SpeedEngine):
    \"\"\"1 ms per prompt token, 20 ms per decode step: plausible timings without a model.\"\"\"

    backend = "fake"

    def __init__(self, model_path: Path, load_cell: Any) -> None:
        self.model_path = model_path

    def load(self) -> LoadInfo:
        return LoadInfo(load_s=0.01, model_file_bytes=self.model_path.stat().st_size)

    def start_context(self, cell: Any) -> dict[str, Any]:
        return {"n_ctx": 1024}

    def n_vocab(self) -> int:
        return 100

    def bos_token(self) -> int | None:
        return 1

    def reset(self, depth_tokens: np.ndarray) -> None:
        pass

    def truncate(self, n_keep: int) -> bool:
        return True

    def prefill(self, tokens: np.ndarray) -> float:
        return 0.001 * tokens.size

    def decode(self, tokens: np.ndarray) -> list[float]:
        return [0.02] * len(tokens)
"""

SUITE = f"""
name: plugin
models:
  - {{id: fake-model, source: MODEL}}
quantizations: [w1]
backends: [{NAME}]
devices:
  - {{id: cpu, kind: cpu}}
workload: {{prompt_tokens: [16], gen_tokens: 4, depths: [0], repetitions: 2, warmup: 0}}
knobs: {{{NAME}_hops: HOPS}}
limits: {{cell_timeout_s: 120, load_timeout_s: 120}}
"""


@pytest.fixture
def plugin(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """(a folder to work in, the environment that registers the throw-away backend)."""
    package = tmp_path / "site" / NAME
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "spec.py").write_text(textwrap.dedent(SPEC_MODULE), encoding="utf-8")
    (package / "engine.py").write_text(textwrap.dedent(ENGINE_MODULE), encoding="utf-8")
    (tmp_path / "model.txt").write_text("any existing file is this backend's model\n", encoding="utf-8")
    search_path = os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    env = {**os.environ, "PYTHONPATH": search_path, "BENCH_BACKENDS": f"{NAME}.spec"}
    return tmp_path, env


def _suite(folder: Path, hops: str) -> Path:
    path = folder / f"suite-{hops.strip('[]').replace(', ', '-')}.yaml"
    text = SUITE.replace("MODEL", str(folder / "model.txt")).replace("HOPS", hops)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _bench(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_a_throw_away_backend_is_one_package_and_one_registry_line(plugin: tuple[Path, dict[str, str]]) -> None:
    folder, env = plugin
    knob = f"{NAME}_hops"

    # Its knob is in the suite schema: a value outside the knob's own `allowed` is refused by name.
    refused = _bench(env, "plan", str(_suite(folder, "[3]")))
    assert refused.returncode == 2 and knob in refused.stderr, refused.stderr

    suite = _suite(folder, "[1, 2]")
    planned = _bench(env, "plan", str(suite), "--format", "json")
    assert planned.returncode == 0, planned.stderr
    cells = json.loads(planned.stdout)["cells"]
    assert sorted(c[knob] for c in cells) == [1, 2]
    assert {(c["backend"], c["status"], c["weights"]) for c in cells} == {(NAME, "run", "real")}

    csv_path = folder / "out.csv"
    ran = _bench(env, "run", str(suite), "-o", str(csv_path), "--quiet")
    assert ran.returncode == 0, ran.stderr
    rows = read_results([csv_path])  # this process has not registered the knob: its column reads as text
    assert sorted(rows[knob].astype(int)) == [1, 2]
    assert set(rows["status"]) == {"ok"} and set(rows["backend"]) == {NAME}
    assert set(rows["backend_version"]) == {VERSION}
    assert rows["decode_tok_s_mean"].tolist() == pytest.approx([50.0, 50.0])  # 20 ms a step

    report_path = folder / "report.md"
    reported = _bench(env, "report", str(csv_path), "-o", str(report_path))
    assert reported.returncode == 0, reported.stderr
    report = report_path.read_text(encoding="utf-8")
    assert f"{NAME} {VERSION}" in report  # the software column of the machines table
    assert "fake-model w1 hop1" in report and "fake-model w1 hop2" in report  # its rows, named by its knob

    # Sources and data, not __pycache__: another process importing bench writes .pyc files there meanwhile (a
    # temporary name, then a rename), which a scan could list and then not find.
    sources = [p for p in BENCH_PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    named_in_bench = [p for p in sources if NAME.encode() in p.read_bytes()]
    assert named_in_bench == []
