"""The llama.cpp runner on the real SmolLM2 model (no mocks): sane figures, depth costs decode speed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.runners.base import measure_cell, repetition_fields
from bench.runners.llamacpp.runner import LlamaCppRunner
from bench.suite import Cell


def _cell(depth: int, prompt: int = 64, gen: int = 32, reps: int = 3) -> Cell:
    return Cell(
        suite="t",
        model_id="smollm2",
        quantization="Q4_1",
        backend="llamacpp",
        device_id="cpu",
        device_kind="cpu",
        device_index=0,
        threads=1,
        n_gpu_layers=0,
        n_batch=2048,
        n_ubatch=512,
        flash_attn="auto",
        kv_cache_type="f16",
        mmap=True,
        repack=True,
        torch_compile=None,
        static_cache=None,
        prompt_tokens=prompt,
        gen_tokens=gen,
        depth=depth,
        repetitions=reps,
        warmup=1,
    )


@pytest.fixture(scope="module")
def runner(smollm2_path: Path):
    runner = LlamaCppRunner(smollm2_path, _cell(0))
    info = runner.load()
    assert info.n_params == pytest.approx(134.5e6, rel=0.01)  # SmolLM2-135M
    assert info.model_file_bytes == smollm2_path.stat().st_size
    yield runner
    runner.close()


@pytest.mark.timing  # bench's clock against llama.cpp's timers, within 3 %
def test_figures_are_what_llama_cpp_itself_timed(runner: LlamaCppRunner) -> None:
    cell = _cell(0)
    fields = runner.start_context(cell)
    assert fields["n_ctx"] >= cell.prompt_tokens + cell.gen_tokens and fields["threads_used"] == 1
    # KV cache: 30 layers x 3 KV heads x 64 dims x 2 (K and V) x 2 bytes (f16) per token.
    assert fields["kv_cache_bytes"] == pytest.approx(30 * 3 * 64 * 2 * 2 * fields["n_ctx"], rel=0.02)
    warmups, measured = measure_cell(runner, cell)
    assert len(warmups) == 1 and len(measured) == 3
    row = repetition_fields(cell, warmups, measured)
    # bench's clock and llama.cpp's own eval timers cover the same calls: the harness adds next to nothing.
    assert abs(row["prefill_overhead_pct"]) <= 3 and abs(row["decode_overhead_pct"]) <= 3, row
    # Each repetition's decode speed is its generated tokens over the sum of its token latencies.
    for rep in measured:
        assert len(rep.decode_token_s) == cell.gen_tokens
    decode = [float(v) for v in row["decode_tok_s_samples"].split(";")]
    assert decode == pytest.approx([cell.gen_tokens / sum(r.decode_token_s) for r in measured], rel=1e-5)
    # TTFT is the prefill: the first token is sampled from the prompt's last logits.
    ttft = [float(v) for v in row["ttft_ms_samples"].split(";")]
    assert ttft == pytest.approx([1000 * r.prefill_s for r in measured], rel=1e-5)
    assert row["itl_ms_p50"] <= row["itl_ms_p90"] <= row["itl_ms_p99"]
    assert len(row["warmup_decode_tok_s"].split(";")) == 1


@pytest.mark.timing  # two decode speeds compared
def test_deep_context_decodes_slower(runner: LlamaCppRunner) -> None:
    """Each decoded token attends over the whole cache, so decode at depth 1024 must be slower than at 0."""
    speeds = {}
    for depth in (0, 1024):
        cell = _cell(depth, prompt=16, gen=24, reps=2)
        runner.start_context(cell)
        warmups, measured = measure_cell(runner, cell)
        speeds[depth] = repetition_fields(cell, warmups, measured)["decode_tok_s_median"]
    assert speeds[1024] < speeds[0], speeds


def test_each_sequences_first_token_is_ready_when_its_prefill_chunk_is_done(runner: LlamaCppRunner) -> None:
    """Two sequences of 48 prompt tokens in n_batch 64 chunks: sequence 0's last token (entry 47) is in the
    first chunk, sequence 1's (entry 95) in the second, so the first user's TTFT is the first chunk's time and
    the second's the whole prefill; the decode then continues after the prompt (position depth + prompt)."""
    cell = _cell(16, prompt=48, gen=4, reps=2).model_copy(update={"parallel": 2, "n_batch": 64})
    runner.start_context(cell)
    warmups, measured = measure_cell(runner, cell)
    for rep in measured:
        assert len(rep.ready_s) == 2 and 0 < rep.ready_s[0] < rep.ready_s[1] == pytest.approx(rep.prefill_s)
    assert runner._pos == 16 + 48 + 4  # no truncation between prefill and decode
    row = repetition_fields(cell, warmups, measured)
    assert len(row["ttft_ms_per_seq_samples"].split(";")) == 2 * 2 and row["decode_context_tokens"] == 16 + 48


def test_logits_are_deterministic_and_shaped(runner: LlamaCppRunner) -> None:
    cell = _cell(0)
    runner.open_context(256, cell, logits_all=True)
    tokens = runner.tokenize("The capital of France is Paris. The capital of Italy is")
    first = runner.logits(tokens)
    second = runner.logits(tokens)
    assert first.shape == (len(tokens), runner.n_vocab())
    assert (first == second).all()


@pytest.mark.timing  # bench's clock against llama.cpp's timers, within 3 %
@pytest.mark.parametrize("model_fixture", ["smollm2_path", "gemma3_path"])
@pytest.mark.parametrize("depth", [0, 1024])
def test_harness_overhead_against_llama_cpp_timers(
    model_fixture: str, depth: int, request: pytest.FixtureRequest
) -> None:
    """bench's timed interval vs llama.cpp's own eval time for the same calls (llama_perf_context): what the
    Python side (ctypes calls, batch filling is off the clock) adds. Printed; asserted <= 3 % for loaded CI."""
    model: Path = request.getfixturevalue(model_fixture)
    cell = _cell(depth, prompt=128, gen=32, reps=2)
    engine = LlamaCppRunner(model, cell)
    engine.load()
    try:
        engine.start_context(cell)
        row = repetition_fields(cell, *measure_cell(engine, cell))
    finally:
        engine.close()
    print(
        f"\n{model.name} depth {depth}: harness overhead prefill {row['prefill_overhead_pct']:+.3f}%, "
        f"decode {row['decode_overhead_pct']:+.3f}%"
    )
    assert abs(row["prefill_overhead_pct"]) <= 3 and abs(row["decode_overhead_pct"]) <= 3
