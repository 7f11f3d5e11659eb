"""A cell's identity is what it measures: golden ids, ids recomputed from rows, and a knob added in one place."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.results import read_results
from bench.runners.registry import quantization_catalog
from bench.suite import Cell, cell_id_of
from tests.conftest import cpu_cell

REPO = Path(__file__).resolve().parents[1]
BASE = dict(
    model_id="smollm2-135m",
    quantization="Q4_1",
    backend="llamacpp",
    device_id="cpu",
    device_kind="cpu",
    prompt_tokens=512,
    gen_tokens=128,
    depth=0,
)


def test_golden_cell_ids() -> None:
    """Pinned: a change here breaks every nightly history's matching, so it must be deliberate."""
    assert Cell.model_validate(BASE).cell_id == "d55f34a6d83e"
    assert Cell.model_validate({**BASE, "threads": 2}).cell_id == "e9c462616c87"
    assert Cell.model_validate({**BASE, "depth": 4096, "kv_cache_type": "q8_0"}).cell_id == "81d0fc48217d"
    assert Cell.model_validate({**BASE, "backend": "torch", "quantization": "bf16"}).cell_id == "cb0981e0daaf"


def test_suite_name_repetitions_and_warmups_are_not_identity() -> None:
    renamed = Cell.model_validate({**BASE, "suite": "renamed", "repetitions": 9, "warmup": 3})
    assert renamed.cell_id == Cell.model_validate(BASE).cell_id


def test_id_recomputed_from_a_csv_row_matches_the_cell() -> None:
    cell = Cell.model_validate({**BASE, "threads": 2, "kv_cache_type": "q8_0", "mmap": False})
    # As pandas reads a CSV: integers as floats, blanks as NaN, booleans as text.
    row = {
        **cell.fields(),
        "threads": 2.0,
        "n_gpu_layers": 0.0,
        "mmap": "False",
        "torch_compile": float("nan"),
        "device_index": 0.0,
        "depth": 0.0,
    }
    assert cell_id_of(row) == cell.cell_id


def test_rows_written_by_the_previous_main_get_todays_ids() -> None:
    """tests/fixtures/compat/old-main.csv was written by main before the knob registry (its cell_id column
    hashes the suite name, repetitions and warm-ups). Recomputed from its columns, each row gets the id the
    same cell has today, so nightly histories keep matching."""
    from bench.suite import expand, load_suite

    old = read_results([REPO / "tests" / "fixtures" / "compat" / "old-main.csv"])
    today = {
        c.cell_id
        for c in expand(load_suite(REPO / "tests" / "fixtures" / "compat" / "suite.yaml", quantization_catalog()))
    }
    recomputed = {cell_id_of(row) for _, row in old.iterrows()}
    assert len(old) == 4 and recomputed == today
    assert not set(old["cell_id"]) & today  # the stored ids were computed by the old rule


KNOB_PROBE = r"""
import json, sys
import bench.suite.knobs as knobs
knobs.register(knobs.Knob("spin", int, 0, "a test-only knob", "spin", "spin", minimum=0,
                           backends=frozenset({"llamacpp"}), memory=True))
from pathlib import Path
from bench.suite import expand, parse_suite
from bench.results import COLUMNS
from bench.runners.registry import quantization_catalog
suite = parse_suite(sys.stdin.read(), Path("t.yaml"), quantization_catalog())
cells = expand(suite)
print(json.dumps({"ids": sorted(c.cell_id for c in cells), "spins": sorted(c.spin for c in cells),
                  "column": "spin" in COLUMNS, "label": knobs.config_name(cells[-1].knobs(), ["spin"])}))
"""
SUITE = """
name: t
models: [{id: m, source: /nonexistent.gguf, source_quantization: Q4_1}]
quantizations: [source]
devices: [{id: cpu, kind: cpu}]
workload: {prompt_tokens: [512], gen_tokens: 128}
knobs: {spin: [0, 3]}
"""


def test_a_knob_declared_in_one_place_reaches_schema_matrix_csv_and_labels() -> None:
    done = subprocess.run(
        [sys.executable, "-c", KNOB_PROBE], input=SUITE, capture_output=True, text=True, cwd=REPO, check=True
    )
    result = json.loads(done.stdout)
    assert result["spins"] == [0, 3]  # schema accepted it, the matrix expanded it
    assert result["column"]  # the CSV has its column
    assert result["label"] == "spin3"  # configuration names carry it
    # At its default the knob is left out of the id: the cell keeps the id it had before the knob existed.
    plain = Cell.model_validate({**BASE, "model_id": "m", "prompt_tokens": 512}).cell_id
    assert plain in result["ids"]


def test_unknown_knob_lists_the_registered_ones(tmp_path: Path) -> None:
    import pytest

    from bench.errors import BenchError
    from bench.suite import parse_suite

    with pytest.raises(BenchError) as info:
        parse_suite(SUITE.replace("spin", "spinn"), tmp_path / "t.yaml", quantization_catalog())
    assert "t.yaml:7" in str(info.value) and "unknown knob 'spinn'" in str(info.value)
    assert "kv_cache_type" in str(info.value)


def test_on_and_off_unquoted_are_flash_attention_values(tmp_path: Path) -> None:
    """YAML reads unquoted on/off as booleans; the knob takes them as the words the README documents."""
    from bench.suite import expand, parse_suite

    suite = parse_suite(
        SUITE.replace("knobs: {spin: [0, 3]}", "knobs: {flash_attn: [auto, on, off]}"),
        tmp_path / "t.yaml",
        quantization_catalog(),
    )
    assert [c.flash_attn for c in expand(suite)] == ["auto", "on", "off"]


def test_cells_that_differ_in_a_knob_have_different_labels() -> None:
    """Progress lines and compare name cells by label: 1 and 4 sequences (or two load points) must not read
    the same."""
    one = cpu_cell("llamacpp", "Q4_1", threads=2)
    four = one.with_values(parallel=4)
    assert one.label != four.label and "np4" in four.label and "np" not in one.label
