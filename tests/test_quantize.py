"""The quantization ladder: derived files built once into a content-addressed cache, safely under races."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.errors import BenchError, ModelUnavailable
from bench.models import cache_dir, check_gguf, gguf_metadata
from bench.runners.llamacpp.quantize import derivable_types, derive, derived_model
from bench.runners.registry import quantization_catalog
from bench.suite import load_suite, parse_suite
from tests.conftest import SMOLLM2_REF, quick_suite_yaml

ROOT = Path(__file__).resolve().parents[1]
LADDER_SUITE = ROOT / "suites" / "quant_ladder.yaml"
LADDER = ("F16", "Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K")


def _quantize_command(suite: Path, cache: Path, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ, BENCH_CACHE_DIR=str(cache), COLUMNS="200", PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "quantize", str(suite), *extra],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _statuses(stdout: str) -> dict[str, str]:
    """type -> status, from `bench quantize`'s table."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 7 and cells[1] in LADDER:
            rows[cells[1]] = cells[5]
    return rows


def _finish(process: subprocess.Popen[str]) -> str:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stdout + stderr
    return stdout


def _model(text: str) -> object:
    suite = parse_suite(text, Path("suite.yaml"), quantization_catalog())
    return suite, suite.models[0]


def _suite_with(quantizations: str, allow_requantize: bool, source: str = SMOLLM2_REF) -> str:
    return quick_suite_yaml(
        "q",
        models=f"""
        models:
          - id: smollm2
            source: {source}
            source_quantization: Q4_1
            allow_requantize: {str(allow_requantize).lower()}
        """,
        quantizations=f"quantizations: [{quantizations}]\n",
        workload="workload: {prompt_tokens: [16], gen_tokens: 4, depths: [0], repetitions: 1, warmup: 0}",
    )


def test_the_ladder_is_built_once_even_by_two_racing_runs_and_then_reused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, second = _quantize_command(LADDER_SUITE, cache), _quantize_command(LADDER_SUITE, cache)
    outputs = [_statuses(_finish(first)), _statuses(_finish(second))]
    for quant in LADDER:  # each rung built by exactly one of the two; the other found it in the cache
        assert sorted(o[quant] for o in outputs) == ["built", "cached"], (quant, outputs)
    folder = next((cache / "quantized").glob("SmolLM2-135M-Instruct.Q4_1-*"))
    built = {p.name.split("-")[0]: p for p in folder.glob("*.gguf")}
    assert sorted(built) == sorted(LADDER)
    assert not list(folder.glob(".*tmp*")), "a temporary file was left behind"
    for quant, path in built.items():
        check_gguf(path)
        assert gguf_metadata(path)["file_type"] == quant
        assert path.with_suffix(".json").is_file()  # provenance: source hash, type, llama.cpp version
    sizes = {q: built[q].stat().st_size for q in LADDER}
    assert sizes["F16"] > sizes["Q8_0"] > sizes["Q4_K_M"] > sizes["Q2_K"]
    stamps = {q: built[q].stat().st_mtime_ns for q in LADDER}
    third = _statuses(_finish(_quantize_command(LADDER_SUITE, cache)))
    assert third == {q: "cached" for q in LADDER}
    assert {q: built[q].stat().st_mtime_ns for q in LADDER} == stamps  # reused, not rewritten


def test_a_derived_quantization_runs_end_to_end_and_records_its_origin(write_suite, tmp_path: Path) -> None:

    from bench.run import RunOptions, run_suite

    path = write_suite(_suite_with("source, Q8_0", allow_requantize=True))
    summary = run_suite(path, RunOptions(output=tmp_path / "out.csv", quiet=True))
    rows = pd.read_csv(summary.path).set_index("quantization")
    assert list(rows["status"]) == ["ok", "ok"], list(rows["reason"])
    row = rows.loc["Q8_0"]
    assert row["derived_from"] == "Q4_1" and row["file_type"] == "Q8_0" and row["model_source"] == SMOLLM2_REF
    assert Path(row["model_file"]).is_relative_to(cache_dir() / "quantized")  # built into bench's cache
    assert pd.isna(rows.loc["Q4_1", "derived_from"]) and rows.loc["Q4_1", "file_type"] == "Q4_1"
    for column in ("model_file_bytes", "est_weights_bytes", "est_total_bytes", "peak_rss_bytes"):
        assert rows.loc["Q8_0", column] > rows.loc["Q4_1", column], column  # 8.5 bits per weight against 5
    assert (rows["peak_rss_bytes"] > rows["est_total_bytes"]).all()  # the peak adds the worker's Python


def test_requantizing_needs_the_suite_to_allow_it() -> None:
    suite, model = _model(_suite_with("Q8_0", allow_requantize=False))
    with pytest.raises(BenchError, match=r"requantizes an already quantized file \(Q4_1\).*allowed.*source \(Q4_1\)"):
        derived_model(suite, model, "Q8_0")


def test_the_source_type_itself_needs_no_derivation(smollm2_path: Path) -> None:
    suite, model = _model(_suite_with("Q4_1", allow_requantize=False))
    derived = derive(model, "Q4_1")
    assert derived.path == smollm2_path and derived.derived_from == "" and not derived.built


def test_unknown_quantization_types_are_refused_with_the_valid_ones() -> None:
    with pytest.raises(BenchError, match=r"suite.yaml:\d+.*unknown quantization 'Q4_K_X'.*Q4_K_M, Q4_K_S"):
        parse_suite(_suite_with("Q4_K_X", allow_requantize=True), Path("suite.yaml"), quantization_catalog())
    suite, model = _model(_suite_with("IQ2_XS", allow_requantize=True))
    with pytest.raises(BenchError, match=r"IQ2_XS.*importance matrix.*valid types: .*Q4_K_M"):
        derived_model(suite, model, "IQ2_XS")
    assert "IQ2_XS" not in derivable_types() and set(LADDER) <= set(derivable_types())


def test_an_unavailable_source_skips_and_a_file_llama_cpp_refuses_fails(tmp_path: Path) -> None:
    suite, model = _model(_suite_with("Q8_0", allow_requantize=True, source=str(tmp_path / "absent.gguf")))
    with pytest.raises(ModelUnavailable, match="model file not found"):
        derived_model(suite, model, "Q8_0")
    # A well-formed GGUF that is no model: llama.cpp refuses it inside the child process, bench reports it.
    from gguf import GGUFWriter

    empty = tmp_path / "empty.gguf"
    writer = GGUFWriter(str(empty), "llama")
    writer.add_file_type(1)  # F16: so no requantization question arises
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    suite, model = _model(_suite_with("Q8_0", allow_requantize=False, source=str(empty)))
    with pytest.raises(BenchError, match=r"llama.cpp could not quantize .*empty.gguf to Q8_0 \(exit status"):
        derived_model(suite, model, "Q8_0")
    assert not list(tmp_path.rglob("*.tmp.gguf"))


def test_bench_quantize_says_what_a_suite_without_derivations_lacks(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(quick_suite_yaml("plain"))
    process = _quantize_command(suite, tmp_path / "cache")
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "derives no quantizations" in stderr
    process = _quantize_command(LADDER_SUITE, tmp_path / "cache", "--only", "quant=Q9_Z")
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "matches none of the derived quantizations" in stderr and "Q4_K_M" in stderr


def test_the_shipped_ladder_suite_allows_requantizing_its_q4_1_source() -> None:
    suite = load_suite(LADDER_SUITE, quantization_catalog())
    model = suite.models[0]
    assert model.allow_requantize and model.source_quantization == "Q4_1"
    assert set(LADDER) <= set(suite.quantizations_for("llamacpp"))
