"""The torch backend on the real torch/transformers/torchao (no mocks): a tiny random model end to end,
SmolLM2's GGUF in fp32 and int8, agreement with llama.cpp, and one suite mixing both backends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.results import read_results
from bench.runners.registry import quantization_catalog
from bench.suite import Cell, expand, load_suite
from tests.conftest import SMOLLM2_REF, cpu_cell, quick_suite_yaml

REPO = Path(__file__).resolve().parents[1]
EVAL_TEXT = REPO / "bench" / "data" / "eval_text.txt"


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=600)


def _torch_cell(quantization: str, **overrides: object) -> Cell:
    return cpu_cell("torch", quantization, **{"torch_compile": "off", "static_cache": False, **overrides})


# ------------------------------------------------------------------ torch stays optional


def test_core_modules_never_import_torch() -> None:
    """The core install and the quickstart path must work without torch: importing them must not load it."""
    code = (
        "import sys, bench.cli, bench.run, bench.plan, bench.execute.worker, bench.report, bench.runners.torch.runner; "
        "print(sorted(m for m in ('torch', 'transformers', 'torchao') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_missing_torch_skips_torch_cells_with_the_fix(monkeypatch: pytest.MonkeyPatch, write_suite) -> None:
    import importlib.util

    import bench.runners.spec
    from bench.hardware import detect
    from bench.plan import plan_cells
    from bench.runners.registry import BACKENDS

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        bench.runners.spec.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torch" else real_find_spec(name, *a),
    )
    reason = BACKENDS["torch"].missing_reason()
    assert "'torch'" in reason and "BENCH_EXTRAS=dev,models,torch ./scripts/install.sh" in reason
    suite = load_suite(
        write_suite(
            quick_suite_yaml(
                backends="backends: [llamacpp, torch]\n",
                quantizations="quantizations: {llamacpp: [source], torch: [fp32]}\n",
            )
        ),
        quantization_catalog(),
    )
    planned = {p.cell.backend: p for p in plan_cells(suite, detect())}
    assert planned["torch"].skip_reason == reason
    assert planned["llamacpp"].runnable


# ------------------------------------------------------------------ capability check


def test_capability_check_is_real_per_device() -> None:
    pytest.importorskip("torchao")
    from bench.runners.torch.probe import quantization_skip_reasons

    cpu = quantization_skip_reasons("cpu", 0, ["fp32", "bf16", "int8", "int4"])
    assert cpu["fp32"] == "" and cpu["bf16"] == "" and cpu["int8"] == ""
    # torchao 0.18's int4 weight-only kernels (tinygemm tile packing, mslk) exist for CUDA only.
    assert "int4 weight-only" in cpu["int4"] and "not supported on cpu" in cpu["int4"]
    import torch

    if not torch.cuda.is_available():
        cuda = quantization_skip_reasons("cuda", 0, ["bf16"])
        assert "cannot use CUDA" in cuda["bf16"]


# ------------------------------------------------------------------ a tiny random model, end to end


def test_runner_contract_on_tiny_model(tiny_model: Path) -> None:
    from bench.runners.base import measure_cell, repetition_fields
    from bench.runners.torch.runner import TorchRunner

    cell = _torch_cell("fp32", depth=8, repetitions=2)
    runner = TorchRunner(tiny_model, cell)
    info = runner.load()
    # 2 layers x (4 attention + 3 MLP matrices) + norms + separate embeddings and head.
    assert info.n_params == 2 * (4 * 64 * 64 - 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64) + 2 * 400 * 64 + 64
    assert info.extra["file_type"] == "F32" and info.extra["bits_per_weight"] == 32.0
    assert runner.n_vocab() == 400 and runner.bos_token() == 1
    tokens = runner.tokenize("The bakery opens early.")
    assert tokens.dtype == np.int32 and tokens[0] == 1 and 1 not in tokens[1:]
    assert runner.tokenize("The bakery opens early.", add_bos=False).tolist() == tokens[1:].tolist()
    assert runner.detokenize(tokens) == "The bakery opens early."
    logits = runner.logits(tokens)
    assert logits.shape == (len(tokens), 400) and logits.dtype == np.float32
    # Causal: a prefix's logits do not depend on what follows it.
    np.testing.assert_allclose(runner.logits(tokens[:5]), logits[:5], rtol=1e-4, atol=1e-4)
    generated = runner.generate_greedy(tokens, 6)
    assert len(generated) <= 6
    # Greedy decoding on the cache picks what the full forward pass ranks first; it stops (nothing generated)
    # only when that first choice is an end-of-generation token.
    first = int(np.argmax(logits[-1]))
    assert (generated[:1].tolist() == [first]) if first not in runner._eog else (len(generated) == 0)

    assert runner.start_context(cell)["n_ctx"] >= cell.depth + cell.prompt_tokens + cell.gen_tokens
    warmups, measured = measure_cell(runner, cell)
    row = repetition_fields(cell, warmups, measured)
    assert row["prefill_tok_s_mean"] > 0 and row["decode_tok_s_mean"] > 0
    assert row["itl_ms_p50"] > 0
    # TTFT is the prompt's prefill (the first token comes from its logits): repetition by repetition.
    ttft = [float(v) for v in row["ttft_ms_samples"].split(";")]
    prefill = [float(v) for v in row["prefill_tok_s_samples"].split(";")]
    assert ttft == pytest.approx([1000 * cell.prompt_tokens / p for p in prefill], rel=1e-4)
    # KV cache: 2 layers x 2 KV heads x 16 dims x (K, V) x 4 bytes per position, at its longest: depth + prompt
    # + generated tokens (decode follows the prompt; truncate crops back to the depth before each prompt).
    assert runner.memory_fields()["kv_cache_bytes"] == 2 * 2 * 16 * 2 * 4 * (8 + 16 + cell.gen_tokens)
    runner.reset(np.arange(8, dtype=np.int32)[None])
    runner.prefill(np.arange(4, dtype=np.int32)[None])
    assert runner.truncate(8) and runner.cache.get_seq_length() == 8
    runner.close()


def test_static_cache_gives_the_same_logits_as_dynamic(tiny_model: Path) -> None:
    """The static-cache knob changes how the cache is held, not what the model computes."""
    import torch

    from bench.runners.torch.runner import TorchRunner

    tokens = np.arange(3, 40, dtype=np.int32)
    results = {}
    for static in (False, True):
        cell = _torch_cell("fp32", static_cache=static)
        runner = TorchRunner(tiny_model, cell)
        runner.load()
        runner.start_context(cell)
        runner.reset(tokens[None, :20])
        runner.prefill(tokens[None, 20:30])
        logits = runner._forward(*runner._inputs(tokens[30:31], 30), runner.cache)
        results[static] = logits[0, -1].float().numpy()
        assert runner.truncate(20) is (not static)
        runner.close()
    np.testing.assert_allclose(results[True], results[False], rtol=1e-4, atol=1e-4)
    assert torch.get_num_threads() == 1  # the cell's thread count


@pytest.mark.slow
def test_torch_compile_knob_measures_and_matches_eager(tiny_model: Path) -> None:
    """torch.compile (Inductor, ~1 min of compiling here, in the warm-up) computes what eager does."""
    from bench.runners.base import measure_cell, repetition_fields
    from bench.runners.torch.runner import TorchRunner

    # Two warm-ups: dynamo compiles the prompt shape, then the one-token shape, then (automatic dynamic shapes)
    # once more when a shape comes back; a recompile inside the measured repetitions would fail the cell.
    cell = _torch_cell("fp32", torch_compile="default", static_cache=True, prompt_tokens=8, gen_tokens=3, warmup=2)
    runner = TorchRunner(tiny_model, cell)
    runner.load()
    runner.start_context(cell)
    warmups, measured = measure_cell(runner, cell)
    assert repetition_fields(cell, warmups, measured)["decode_tok_s_mean"] > 0
    tokens = np.arange(3, 11, dtype=np.int32)  # the prefill's shape: its compiled graph is reused
    outputs = []
    for eager in (False, True):
        runner.reset(np.zeros((1, 0), dtype=np.int32))
        outputs.append(runner._forward(*runner._inputs(tokens, 0), runner.cache, eager=eager)[0, -1].numpy())
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)
    runner.close()


def test_bench_run_on_tiny_model_with_quality(tiny_model: Path, write_suite, tmp_path: Path) -> None:
    pytest.importorskip("torchao")
    suite = write_suite(
        quick_suite_yaml(
            name="tiny-torch",
            models=f"models:\n  - {{id: tiny, source: '{tiny_model}'}}\n",
            backends="backends: [torch]\n",
            quantizations="quantizations: [fp32, int8, int4]\n",
            workload="workload: {prompt_tokens: [32], gen_tokens: 8, depths: [0, 16], repetitions: 2, warmup: 1}\n",
            knobs="knobs: {threads: [1]}\n",
            include="include:\n  - {quantization: fp32, static_cache: true, depth: 16}\n",
            quality="quality: {enabled: true, context: 64, max_chunks: 2, tasks: ['builtin:arithmetic'], "
            "task_limit: 3}\n",
        )
    )
    csv_path = tmp_path / "tiny.csv"
    result = bench("run", str(suite), "-o", str(csv_path), "--quiet")
    assert result.returncode == 0, result.stderr
    frame = read_results([csv_path])
    assert set(frame["backend"]) == {"torch"} and len(frame) == 7  # 3 quantizations x 2 depths + 1 static
    skipped = frame[frame["status"] == "skipped"]
    assert set(skipped["quantization"]) == {"int4"}
    assert all("int4 weight-only" in reason and "cpu" in reason for reason in skipped["reason"])
    ok = frame[frame["status"] == "ok"].set_index(["quantization", "depth", "static_cache"])
    assert len(ok) == 5, frame[["quantization", "status", "reason"]]
    for _, row in ok.iterrows():
        assert row["prefill_tok_s_mean"] > 0 and row["decode_tok_s_mean"] > 0 and row["ttft_ms_mean"] > 0
        assert row["peak_rss_bytes"] > 0 and row["kv_cache_bytes"] > 0 and row["load_s"] > 0
        assert row["arch"] == "llama" and row["n_layers"] == 2 and row["threads"] == 1
        assert row["backend_version"] and np.isfinite(row["ppl"]) and row["ppl"] > 1
    fp32, int8 = ok.loc[("fp32", 0, False)], ok.loc[("int8", 0, False)]
    assert fp32["file_type"] == "F32" and fp32["bits_per_weight"] == 32.0
    assert int8["file_type"] == "int8 weight-only" and int8["bits_per_weight"] < 20
    # int8 quality is measured against the fp32 baseline through the same code path as llama.cpp rows.
    assert fp32["baseline_quantization"] == "fp32" and fp32["kld_mean"] == pytest.approx(0, abs=1e-6)
    # Random weights give near-uniform distributions, which int8 barely moves: the KLD estimate is ~0.
    assert int8["kld_mean"] == pytest.approx(0, abs=0.01) and int8["top1_agreement_pct"] > 90
    assert int8["ppl"] == pytest.approx(fp32["ppl"], rel=0.01) and int8["ppl"] != fp32["ppl"]
    assert ok.loc[("fp32", 16, True), "decode_tok_s_mean"] > 0


def test_torch_model_must_be_safetensors(tmp_path: Path, write_suite) -> None:
    """A folder with only pickled weights is refused before any worker could unpickle it."""
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    suite = write_suite(
        quick_suite_yaml(
            models=f"models:\n  - {{id: pickled, source: '{folder}'}}\n",
            backends="backends: [torch]\n",
            quantizations="quantizations: [fp32]\n",
        )
    )
    csv_path = tmp_path / "out.csv"
    result = bench("run", str(suite), "-o", str(csv_path), "--quiet")
    assert result.returncode == 3, result.stderr  # its cell failed: exit 3, the row written
    row = read_results([csv_path]).iloc[0]
    assert row["status"] == "failed"
    assert "no *.safetensors weights" in row["reason"] and "pytorch_model.bin" in row["reason"]


# ------------------------------------------------------------------ SmolLM2: torch vs llama.cpp


def test_torch_and_llamacpp_agree_on_top1(smollm2_path: Path) -> None:
    """Same GGUF, same text: torch fp32 (dequantized weights) and llama.cpp pick the same next token."""
    pytest.importorskip("transformers")
    from bench.runners.llamacpp.runner import LlamaCppRunner
    from bench.runners.torch.runner import TorchRunner

    text = EVAL_TEXT.read_text(encoding="utf-8")[:4000]
    llama_cell = _torch_cell("source").model_copy(
        update=dict(
            backend="llamacpp",
            threads=2,
            n_gpu_layers=0,
            n_batch=512,
            n_ubatch=512,
            flash_attn="auto",
            kv_cache_type="f16",
            mmap=True,
            repack=True,
            torch_compile=None,
            static_cache=None,
        )
    )
    llama = LlamaCppRunner(smollm2_path, llama_cell)
    llama.load()
    llama.prepare_logits(512, llama_cell)
    tokens = llama.tokenize(text, add_bos=True)[:256]
    reference = llama.logits(tokens)
    llama.close()

    torch_runner = TorchRunner(smollm2_path, _torch_cell("fp32", threads=2))
    info = torch_runner.load()
    assert info.n_params == pytest.approx(134.5e6, rel=0.01)
    assert "Q4_1 GGUF" in info.extra["derived_from"]
    # The tokenizer transformers builds from the GGUF tokenizes like llama.cpp.
    assert torch_runner.tokenize(text, add_bos=True)[:256].tolist() == tokens.tolist()
    assert torch_runner.bos_token() is None and torch_runner.n_vocab() == 49152
    logits = torch_runner.logits(tokens)
    torch_runner.close()
    agreement = float(np.mean(np.argmax(logits, axis=1) == np.argmax(reference, axis=1)))
    assert agreement >= 0.90, agreement


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, str]:
    """One suite, both backends, SmolLM2's GGUF: llama.cpp as shipped, torch in fp32 and int8."""
    pytest.importorskip("torchao")
    out = tmp_path_factory.mktemp("mixed")
    suite = out / "mixed.yaml"
    suite.write_text(
        quick_suite_yaml(
            name="mixed",
            models=f"models:\n  - {{id: smollm2, source: '{SMOLLM2_REF}', source_quantization: Q4_1}}\n",
            backends="backends: [llamacpp, torch]\n",
            quantizations="quantizations: {llamacpp: [source], torch: [fp32, int8]}\n",
            workload="workload: {prompt_tokens: [64], gen_tokens: 16, depths: [0], repetitions: 2, warmup: 0}\n",
            quality="quality: {enabled: true, context: 128, max_chunks: 2, tasks: ['builtin:arithmetic'], "
            "task_limit: 3}\n",
        ),
        encoding="utf-8",
    )
    csv_path, report_path = out / "mixed.csv", out / "mixed.md"
    result = bench("run", str(suite), "-o", str(csv_path), "--report", str(report_path), "--quiet")
    assert result.returncode == 0, result.stderr
    return read_results([csv_path]), report_path.read_text(encoding="utf-8")


@pytest.mark.slow
def test_smollm2_gguf_runs_through_torch_in_fp32_and_int8(mixed_run: tuple[pd.DataFrame, str]) -> None:
    frame, _ = mixed_run
    torch_rows = frame[frame["backend"] == "torch"].set_index("quantization")
    assert list(torch_rows["status"]) == ["ok", "ok"], torch_rows["reason"]
    for quantization in ("fp32", "int8"):
        row = torch_rows.loc[quantization]
        assert row["prefill_tok_s_mean"] > 0 and row["decode_tok_s_mean"] > 0
        assert row["n_params"] == pytest.approx(134.5e6, rel=0.01) and row["n_layers"] == 30
        assert "Q4_1 GGUF, dequantized" in row["derived_from"]
        assert row["model_file_bytes"] == frame[frame["backend"] == "llamacpp"]["model_file_bytes"].iloc[0]
    assert torch_rows.loc["fp32", "file_type"] == "F32"
    assert torch_rows.loc["int8", "file_type"] == "int8 weight-only"
    assert torch_rows.loc["int8", "bits_per_weight"] < torch_rows.loc["fp32", "bits_per_weight"] / 2


@pytest.mark.slow
def test_mixed_backends_share_one_csv_and_one_report(mixed_run: tuple[pd.DataFrame, str]) -> None:
    frame, report = mixed_run
    assert set(frame["backend"]) == {"llamacpp", "torch"} and set(frame["status"]) == {"ok"}
    assert frame["run_id"].nunique() == 1
    # Perplexity comes from one code path for both backends; the same Q4_1 weights give nearly the same PPL.
    ppl = frame.set_index(["backend", "quantization"])["ppl"]
    assert ppl[("torch", "fp32")] == pytest.approx(ppl[("llamacpp", "Q4_1")], rel=0.05)
    for backend in ("llamacpp", "torch"):
        assert backend in report
    decode = frame.set_index(["backend", "quantization"])["decode_tok_s_mean"]
    for key in (("llamacpp", "Q4_1"), ("torch", "fp32"), ("torch", "int8")):
        assert f"{decode[key]:,.1f}" in report  # every row's figure reaches the one report


def test_shipped_torch_suites_expand() -> None:
    for name, backends in (
        ("torch_cpu", {"torch"}),
        ("mixed_backends", {"llamacpp", "torch"}),
        ("gpu_check", {"torch"}),
    ):
        cells = expand(load_suite(REPO / "suites" / f"{name}.yaml", quantization_catalog()))
        assert {c.backend for c in cells} == backends, name


def test_hf_repo_reference_resolves_from_the_local_cache(tiny_model: Path, tmp_path: Path) -> None:
    """hf://org/repo names a whole repository (the torch form); offline it comes from the HF cache."""
    import shutil

    commit = "0" * 40
    repo = tmp_path / "hub" / "models--bench-test--tiny-llama"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "from bench.models import resolve; from bench.runners.torch.files import check_torch_model; "
        "path = resolve('hf://bench-test/tiny-llama').path; check_torch_model(path); print(path)"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == repo / "snapshots" / commit


def test_recompiling_during_measured_repetitions_fails_the_cell(tiny_model: Path, monkeypatch) -> None:
    """torch.compile traces per input shape: without warm-ups the measured repetitions compile (prompt shape,
    then one-token shape), so the figures would hold compile time; the cell fails saying so. With a warm-up
    that saw both shapes, nothing compiles on the clock. (dynamo's eager backend: the same tracing and
    counters as inductor, without the C++ build time.)"""
    import torch

    from bench.errors import BenchError
    from bench.runners.base import measure_cell
    from bench.runners.torch.runner import TorchRunner

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: real_compile(fn, backend="eager"))
    torch._dynamo.reset()
    cold = _torch_cell("fp32", torch_compile="default", warmup=0, repetitions=2, prompt_tokens=8, gen_tokens=3)
    runner = TorchRunner(tiny_model, cold)
    runner.load()
    runner.start_context(cold)
    with pytest.raises(BenchError, match="compiled again during the measured repetitions"):
        measure_cell(runner, cold)
    warm = _torch_cell("fp32", torch_compile="default", warmup=2, repetitions=2, prompt_tokens=8, gen_tokens=3)
    runner.start_context(warm)
    warmups, measured = measure_cell(runner, warm)
    assert len(measured) == 2
    runner.close()


def test_parallel_sequences_use_the_batch_dimension(tiny_model: Path) -> None:
    """parallel 3: three sequences in one batch share each forward pass; the KV cache holds all three."""
    from bench.runners.base import measure_cell, repetition_fields
    from bench.runners.torch.runner import TorchRunner

    cell = _torch_cell("fp32", parallel=3, depth=4, prompt_tokens=8, gen_tokens=3, repetitions=2)
    runner = TorchRunner(tiny_model, cell)
    runner.load()
    runner.start_context(cell)
    row = repetition_fields(cell, *measure_cell(runner, cell))
    assert row["decode_tok_s_per_seq_mean"] == pytest.approx(row["decode_tok_s_mean"] / 3)
    # 3 sequences x (depth 4 + prompt 8 + 3 generated: decode follows the prompt) positions x 2 layers x 2 KV
    # heads x 16 dims x (K, V) x 4 bytes.
    assert runner.memory_fields()["kv_cache_bytes"] == 3 * (4 + 8 + 3) * 2 * 2 * 16 * 2 * 4
    runner.close()
