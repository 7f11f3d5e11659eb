"""Synthetic weights in suites: `source: synthetic:<name>`, `synthetic: {config: ...}`, `fallback: synthetic`;
what the plan says each cell uses, the rows' `weights` columns, quality skipped, and consumer_gpu.yaml's plan."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.errors import BenchError
from bench.hardware import detect
from bench.models.catalog import KNOWN_CONFIGS
from bench.models.weights import SYNTHETIC_QUALITY_REASON, synthetic_model_problems
from bench.plan import plan_suite
from bench.results import read_results
from bench.runners import registry
from bench.runners.registry import quantization_catalog
from bench.suite import SyntheticConfig, load_suite
from tests.conftest import cpu_cell, quick_suite_yaml

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path):
    return load_suite(path, quantization_catalog(), synthetic_model_problems)


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def models_yaml(*lines: str) -> str:
    return "models:\n  - id: m\n" + "".join(f"    {line}\n" for line in lines)


# ------------------------------------------------------------------------------------------------- the suite


def test_a_known_name_and_a_config_relative_to_the_suite_file_are_read(write_suite, tmp_path: Path) -> None:
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "config.json").write_text(json.dumps(KNOWN_CONFIGS["SmolLM2-135M"]), encoding="utf-8")
    suite = load(
        write_suite(
            quick_suite_yaml(
                models="""
                models:
                  - {id: named, source: "synthetic:smollm2-135m"}
                  - {id: configured, synthetic: {config: shapes/config.json}}
                """,
                quantizations="quantizations: [Q8_0]",
            )
        )
    )
    assert suite.model("named").synthetic_only and suite.model("named").synthetic_shape_ref == "smollm2-135m"
    assert suite.model("configured").synthetic == SyntheticConfig(config=str(tmp_path / "shapes" / "config.json"))


def test_an_unknown_name_is_an_error_at_its_line_listing_the_known_names(write_suite) -> None:
    path = write_suite(quick_suite_yaml(models=models_yaml("source: synthetic:Llama-9-1T")))
    with pytest.raises(BenchError) as error:
        load(path)
    message = error.value.message
    assert f"{path}:4: field `models[0].source`" in message
    assert "synthetic:Llama-9-1T: no such known shape" in message
    assert "SmolLM2-135M" in message and "DeepSeek-R1-Distill-Qwen-14B" in message


def test_a_config_of_an_unsupported_architecture_names_the_supported_ones(write_suite, tmp_path: Path) -> None:
    config = {**KNOWN_CONFIGS["SmolLM2-135M"], "architectures": ["MambaForCausalLM"]}
    (tmp_path / "mamba.json").write_text(json.dumps(config), encoding="utf-8")
    path = write_suite(quick_suite_yaml(models=models_yaml("synthetic: {config: mamba.json}")))
    with pytest.raises(BenchError) as error:
        load(path)
    message = error.value.message
    assert f"{path}:4: field `models[0].synthetic.config`" in message
    assert "MambaForCausalLM cannot be synthesized" in message
    assert "supported: LlamaForCausalLM, Qwen2ForCausalLM" in message


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (("source: m.gguf", "fallback: synthetic"), "add `synthetic: <known name>`"),
        (("source: m.gguf", "synthetic: SmolLM2-135M"), "add `fallback: synthetic`"),
        (("source: synthetic:SmolLM2-135M", "fallback: synthetic"), "its source already names its shape"),
        (("synthetic: SmolLM2-135M", "fallback: synthetic"), "is for a model with real files"),
        (("source: 'synthetic: '",), "needs a known shape's name"),
    ],
)
def test_a_synthetic_model_said_wrongly_says_what_to_write(write_suite, lines: tuple[str, ...], expected: str) -> None:
    path = write_suite(quick_suite_yaml(models=models_yaml(*lines)))
    with pytest.raises(BenchError) as error:
        load(path)
    assert f"{path}:3: field `models[0]`" in error.value.message
    assert expected in error.value.message


# ------------------------------------------------------------------------------------- real or synthetic, planned


def fallback_suite(write_suite, source: Path, quantizations: str = "[source, Q8_0]") -> Path:
    return write_suite(
        quick_suite_yaml(
            models=models_yaml(
                f"source: {source}", "source_quantization: Q4_1", "fallback: synthetic", "synthetic: SmolLM2-135M"
            ),
            quantizations=f"quantizations: {quantizations}",
        )
    )


def planned_weights(path: Path) -> dict[str, tuple[str, str, str]]:
    """quantization -> (weights, why, skip reason) of the suite's cells."""
    planned = plan_suite(load(path), detect())
    return {p.cell.quantization: (p.weights.weights, p.weights.describe(), p.skip_reason) for p in planned if p.weights}


def test_a_local_real_file_is_used_when_present_and_synthetic_weights_otherwise(
    write_suite, tmp_path: Path, smollm2_path: Path
) -> None:
    local = tmp_path / "smollm2.gguf"
    shutil.copyfile(smollm2_path, local)
    suite = fallback_suite(write_suite, local)
    assert planned_weights(suite) == {"Q4_1": ("real", "", ""), "Q8_0": ("real", "", "")}  # Q8_0: derived here
    local.unlink()
    assert planned_weights(suite) == {
        quant: ("synthetic", f"{local} not found: synthetic weights of SmolLM2-135M", "") for quant in ("Q4_1", "Q8_0")
    }


def test_a_hub_file_not_in_the_cache_falls_back_without_asking_the_hub(write_suite, tmp_path: Path) -> None:
    suite = write_suite(
        quick_suite_yaml(
            models=models_yaml(
                "files: {Q8_0: hf://nobody/none-GGUF/none-Q8_0.gguf}", "fallback: synthetic", "synthetic: SmolLM2-135M"
            ),
            quantizations="quantizations: [Q8_0]",
        )
    )
    result = bench("plan", str(suite), "--cells", env={"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert result.returncode == 0, result.stderr
    assert "hub file not in the cache: synthetic weights of SmolLM2-135M" in result.stdout


def test_synthetic_weights_at_a_type_that_needs_an_imatrix_are_skipped_saying_which_types_work(
    write_suite, tmp_path: Path
) -> None:
    suite = fallback_suite(write_suite, tmp_path / "absent.gguf", "[IQ2_XS, Q4_K_M]")
    weights = planned_weights(suite)
    assert weights["Q4_K_M"][2] == ""
    reason = weights["IQ2_XS"][2]
    assert reason.startswith("synthetic weights cannot be built at IQ2_XS: they take F16 and the types llama.cpp")
    assert "Q4_K_M" in reason and "IQ2_XS," not in reason


def test_a_backend_that_cannot_build_synthetic_weights_skips_the_cell(
    write_suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = registry.BACKENDS["llamacpp"]
    monkeypatch.setitem(registry.BACKENDS, "llamacpp", replace(spec, synthesize=None))
    suite = write_suite(
        quick_suite_yaml(models=models_yaml("source: synthetic:SmolLM2-135M"), quantizations="quantizations: [Q8_0]")
    )
    assert planned_weights(suite) == {
        "Q8_0": ("synthetic", "synthetic weights of SmolLM2-135M", "backend llamacpp cannot use synthetic weights")
    }


# ------------------------------------------------------------------------------------------- a run, its rows


def test_a_synthetic_run_writes_synthetic_rows_and_skips_quality(write_suite, tmp_path: Path) -> None:
    suite = write_suite(
        quick_suite_yaml(
            name="synthetic-run",
            models=models_yaml("source: synthetic:SmolLM2-135M"),
            quantizations="quantizations: [Q8_0]",
            workload="workload: {prompt_tokens: [16], gen_tokens: 4, depths: [0], repetitions: 1, warmup: 0}",
            quality="quality: {context: 64, max_chunks: 1, tasks: ['builtin:arithmetic'], task_limit: 2}",
        )
    )
    output = tmp_path / "out.csv"
    cache = tmp_path / "cache"  # its own cache: the model is built (and said) in this run, and no baseline is
    result = bench("run", str(suite), "-o", str(output), env={"BENCH_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "synthetic SmolLM2-135M: write Q8_0 (140 MiB): 100%" in result.stdout + result.stderr  # progress, said
    row = read_results([output]).iloc[0]
    assert (row["status"], row["weights"], row["weights_shape"]) == ("ok", "synthetic", "SmolLM2-135M")
    assert row["model_source"] == "synthetic:SmolLM2-135M"
    assert row["decode_tok_s_mean"] > 0 and row["n_layers"] == 30
    assert SYNTHETIC_QUALITY_REASON in row["warnings"]
    for column in ("ppl", "kld_mean", "task_accuracy_pct", "baseline_quantization"):
        assert row[column] is None or row[column] != row[column] or row[column] == ""  # empty: not measured
    assert list(cache.glob("baselines/*")) == []  # never a baseline from random weights
    report = tmp_path / "report.md"
    result = bench("report", str(output), "-o", str(report))
    assert result.returncode == 0, result.stderr
    text = report.read_text(encoding="utf-8")
    assert "m ˢ" in text  # the model name, marked
    assert "ˢ synthetic weights: the named model's exact shape and weight types with random values" in text


def test_a_baseline_is_never_built_from_synthetic_weights(write_suite, smollm2_path: Path) -> None:
    from bench.models import ResolvedModel
    from bench.quality import QualityScheduler
    from bench.run.acquire import ModelAcquirer
    from bench.suite import expand

    suite = load(
        write_suite(
            quick_suite_yaml(
                models=models_yaml(
                    f"files: {{Q4_1: {smollm2_path}}}", "fallback: synthetic", "synthetic: SmolLM2-135M"
                ),
                quantizations="quantizations: [Q4_1, F16]",  # F16, the baseline, has no file here: synthetic
                quality="quality: {tasks: []}",
            )
        )
    )
    jobs: list[dict[str, object]] = []

    class Done:
        fields = {"ppl": 1.0}
        error = ""

    def run_job(backend, path, cell, job, timeout, limit):  # noqa: ANN001, ANN202 - the RunQualityJob signature
        jobs.append(job)
        return Done()

    resolved = ResolvedModel(str(smollm2_path), smollm2_path)
    scheduler = QualityScheduler(suite, lambda cell: resolved, run_job, weights_of=ModelAcquirer(suite).weights)
    by_quant = {cell.quantization: scheduler.fields_for(cell) for cell in expand(suite)}
    assert by_quant["F16"] == {"warnings": SYNTHETIC_QUALITY_REASON}
    assert by_quant["Q4_1"] == {"ppl": 1.0}  # the real file is measured (perplexity), with no KLD baseline
    assert [(job["quantization"], job["write_baseline"], job["baseline_path"]) for job in jobs] == [
        ("Q4_1", False, None)
    ]
    assert jobs[0]["warnings"] == ["no KLD: baseline F16: no file for F16: synthetic weights of SmolLM2-135M"]


def test_an_old_csv_without_the_weights_columns_reads_as_real() -> None:
    frame = read_results([ROOT / "tests" / "fixtures" / "compat" / "old-main.csv"])
    assert set(frame["weights"]) == {"real"}


# ------------------------------------------------------------------------------------- consumer_gpu.yaml's plan


def test_consumer_gpu_plans_synthetic_weights_and_leaves_out_hours_long_cells_with_their_estimate() -> None:
    result = bench("plan", "suites/consumer_gpu.yaml", "--format", "json", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    cells = json.loads(result.stdout)["cells"]
    cpu = {(c["model_id"], c["quantization"], c["depth"]): c for c in cells if c["device_id"] == "cpu"}
    limit = load(ROOT / "suites" / "consumer_gpu.yaml").limits.max_cell_estimate_minutes
    assert limit is not None
    too_long = {key for key, c in cpu.items() if "limits.max_cell_estimate_minutes" in (c["reason"] or "")}
    for key, cell in cpu.items():
        assert cell["weights"] in ("real", "synthetic")
        if key in too_long:
            assert cell["reason"].startswith("estimated ")
            assert cell["reason"].endswith(f" > limits.max_cell_estimate_minutes {limit:g}")
        elif cell["status"] == "run":
            assert cell["est_seconds"] <= limit * 60, key
    assert cpu[("r1-distill-qwen-1.5b", "Q4_K_M", 0)]["status"] == "run"
    if detect().cpu_physical_cores <= 16:  # the time model scales a CPU's FLOP rate with its cores
        assert ("r1-distill-qwen-7b", "Q4_K_M", 32768) in too_long
    if detect().cpu_physical_cores <= 2:  # this project's 2-core machine: the 1.5B cells run, the hours-long don't
        for quant in ("Q4_K_M", "Q8_0"):
            assert [cpu[("r1-distill-qwen-1.5b", quant, depth)]["status"] for depth in (0, 4096)] == ["run", "run"]
            assert ("r1-distill-qwen-7b", quant, 4096) in too_long


# ------------------------------------------------------------------------------------------------------ torch


def test_torch_builds_a_synthetic_smollm2_135m_with_from_config_and_measures_it() -> None:
    pytest.importorskip("transformers")
    from bench.models.catalog import known_shape
    from bench.runners.base import measure_cell, repetition_fields
    from bench.runners.torch.runner import TorchRunner
    from bench.runners.torch.synthetic import hf_config, synthetic_folder

    shape = known_shape("SmolLM2-135M")
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_key_value_heads", "vocab_size"):
        assert hf_config(shape)[key] == KNOWN_CONFIGS["SmolLM2-135M"][key]  # the catalog's values, back
    resolved = synthetic_folder(shape, "fp32")
    assert resolved.weights == "synthetic" and not any(resolved.path.glob("*.safetensors"))  # nothing large written
    cell = cpu_cell("torch", "fp32", torch_compile="off", static_cache=False, prompt_tokens=4, gen_tokens=2)
    runner = TorchRunner(resolved.path, cell)
    info = runner.load()
    # The published SmolLM2-135M parameter count (tied embeddings), as the catalog's test checks it.
    assert info.n_params == 134_515_008
    assert info.extra["file_type"] == "F32" and runner.n_vocab() == 49152 and runner.bos_token() is None
    first = runner.logits(np.arange(4, dtype=np.int32))
    runner.start_context(cell)
    warmups, measured = measure_cell(runner, cell)
    assert repetition_fields(cell, warmups, measured)["decode_tok_s_mean"] > 0
    runner.close()
    again = TorchRunner(resolved.path, cell)
    again.load()
    np.testing.assert_array_equal(again.logits(np.arange(4, dtype=np.int32)), first)  # seeded: the same model
    again.close()
