"""The one contract every backend passes: the timing protocol on a recording fake, and each registered
backend's real engine on a tiny model (load -> context -> prefill -> decode -> truncate -> logits -> close).

A backend added to the registry without a tiny model here fails `test_every_backend_has_a_tiny_model`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.quality import supports_quality
from bench.runners.base import CellEngine, LoadInfo, SpeedEngine, measure_cell, measure_fields, repetition_fields
from bench.runners.registry import BACKENDS, create_engine
from bench.suite import Cell

# backend -> (pytest fixture giving its tiny model, quantization the cell names)
TINY_MODELS = {
    "llamacpp": ("smollm2_path", "Q4_1"),
    "torch": ("tiny_model", "fp32"),
    "server": ("smollm2_path", "Q4_1"),
}
PREFILL_S, DECODE_S, FILL_S, TRUNCATE_S = 0.25, 0.01, 7.0, 3.0


def _cell(backend: str, quantization: str, **values: Any) -> Cell:
    fields: dict[str, Any] = dict(
        model_id="m",
        quantization=quantization,
        backend=backend,
        device_id="cpu",
        device_kind="cpu",
        threads=1,
        prompt_tokens=24,
        gen_tokens=6,
        depth=16,
        repetitions=3,
        warmup=2,
    )
    fields.update(values)
    return Cell.model_validate(fields)


class RecordingEngine(SpeedEngine):
    """Takes fixed times for timed calls and records every call. Its untimed work (depth fill, truncation)
    'costs' seconds too, reported through engine_seconds, so a protocol that put them on the clock shows."""

    backend = "fake"

    def __init__(self, model_path: Path, load_cell: Cell) -> None:
        self.calls: list[tuple[str, int]] = []
        self.position = 0
        self.decode_starts: list[int] = []  # the cached positions each decode started after
        self.own = [0.0, 0.0]

    def load(self) -> LoadInfo:
        return LoadInfo(load_s=0.0)

    def start_context(self, cell: Cell) -> dict[str, Any]:
        return {"n_ctx": 256}

    def n_vocab(self) -> int:
        return 100

    def bos_token(self) -> int | None:
        return 1

    def reset(self, depth_tokens: np.ndarray) -> None:
        self.calls.append(("reset", depth_tokens.shape))
        self.position = depth_tokens.shape[1]
        self.own[0] += FILL_S  # the engine works, off bench's clock

    def truncate(self, n_keep: int) -> bool:
        self.calls.append(("truncate", n_keep))
        self.position = n_keep
        self.own[1] += 0.0
        return True

    def prefill(self, tokens: np.ndarray) -> float:
        self.calls.append(("prefill", tokens.shape))
        self.position += tokens.shape[1]
        self.own[0] += PREFILL_S
        return PREFILL_S

    def decode(self, tokens: np.ndarray) -> list[float]:
        self.calls.append(("decode", tokens.shape))
        self.decode_starts.append(self.position)
        self.position += len(tokens)
        self.own[1] += DECODE_S * len(tokens)
        return [DECODE_S] * len(tokens)

    def engine_seconds(self) -> tuple[float, float]:
        return self.own[0], self.own[1]


def test_protocol_keeps_depth_fill_warmups_and_truncation_off_the_clock() -> None:
    cell = _cell("llamacpp", "Q4_1")
    engine = RecordingEngine(Path("x"), cell)
    warmups, measured = measure_cell(engine, cell)
    assert len(warmups) == 2 and len(measured) == 3
    per_rep = [("prefill", (1, 24)), ("decode", (6, 1))]
    # The depth is filled once (as llama-bench fills it once per test); every later repetition first drops
    # what the previous one added: back to depth, prompt, then generate after the prompt (no truncation
    # between: decode runs at depth + prompt, as llama-batched-bench's TG at pp + i).
    assert engine.calls == [("reset", (1, 16)), *per_rep, *[("truncate", 16), *per_rep] * 4]
    assert engine.decode_starts == [16 + 24] * 5
    row = repetition_fields(cell, warmups, measured)
    assert row["decode_context_tokens"] == 16 + 24
    # Only the timed calls count: 24 tokens in 0.25 s, 6 tokens at 10 ms each — not the 7 s fills.
    assert row["prefill_tok_s_mean"] == pytest.approx(24 / PREFILL_S)
    assert row["decode_tok_s_mean"] == pytest.approx(1 / DECODE_S)
    assert row["itl_ms_p99"] == pytest.approx(1000 * DECODE_S)
    # The first token is sampled from the prefill's last logits: TTFT is the prefill, not prefill + a decode.
    assert row["ttft_ms_mean"] == pytest.approx(1000 * PREFILL_S)
    assert len(row["decode_tok_s_samples"].split(";")) == 3 and len(row["warmup_decode_tok_s"].split(";")) == 2
    # engine_seconds differences are taken around the timed calls only, so the fake's fills do not leak in.
    assert row["prefill_overhead_pct"] == pytest.approx(0.0, abs=1e-9)
    assert row["decode_overhead_pct"] == pytest.approx(0.0, abs=1e-9)


class StaticCacheEngine(RecordingEngine):
    """An engine that cannot drop positions (a static torch cache)."""

    def truncate(self, n_keep: int) -> bool:
        self.calls.append(("truncate", n_keep))
        return False


def test_an_engine_that_cannot_drop_positions_is_filled_again_each_repetition() -> None:
    cell = _cell("llamacpp", "Q4_1")
    engine = StaticCacheEngine(Path("x"), cell)
    measure_cell(engine, cell)
    assert [name for name, _ in engine.calls].count("reset") == 5  # before each prompt; decode follows it
    assert engine.calls[:3] == [("reset", (1, 16)), ("prefill", (1, 24)), ("decode", (6, 1))]
    assert engine.decode_starts == [16 + 24] * 5


def test_parallel_sequences_are_prefilled_and_decoded_together() -> None:
    """With parallel N: N prompts in one timed prefill, then steps of N tokens; tok/s figures are aggregates,
    the per-sequence decode speed is what one user sees, TTFT is the whole batched prefill (the last user's)."""
    cell = _cell("llamacpp", "Q4_1", parallel=4)
    engine = RecordingEngine(Path("x"), cell)
    warmups, measured = measure_cell(engine, cell)
    assert engine.calls[:3] == [("reset", (4, 16)), ("prefill", (4, 24)), ("decode", (6, 4))]
    row = repetition_fields(cell, warmups, measured)
    assert row["prefill_tok_s_mean"] == pytest.approx(4 * 24 / PREFILL_S)
    assert row["decode_tok_s_mean"] == pytest.approx(4 / DECODE_S)
    assert row["decode_tok_s_per_seq_mean"] == pytest.approx(1 / DECODE_S)
    assert row["ttft_ms_mean"] == pytest.approx(1000 * PREFILL_S)
    # An engine that prefills every prompt in one pass: each user's first token comes at the prefill's end.
    ttft = [float(v) for v in row["ttft_ms_per_seq_samples"].split(";")]
    assert ttft == pytest.approx([1000 * PREFILL_S] * 4 * 3)


class ChunkedPrefillEngine(RecordingEngine):
    """Prefills the flattened prompts in chunks: sequence s's first token is ready when its chunk is done."""

    READY_S = [0.05, 0.05, 0.15, PREFILL_S]

    def prefill_ready_s(self) -> list[float] | None:
        return self.READY_S


def test_each_users_ttft_and_time_per_output_token_are_kept_per_repetition() -> None:
    """MLPerf's per-request figures: TTFT when the user's last prompt token was processed; TPOT = (last token -
    first token) / (output tokens - 1): the rest of the prefill after its first token, then the decode steps."""
    cell = _cell("llamacpp", "Q4_1", parallel=4)
    warmups, measured = measure_cell(ChunkedPrefillEngine(Path("x"), cell), cell)
    row = repetition_fields(cell, warmups, measured)
    ttft = [float(v) for v in row["ttft_ms_per_seq_samples"].split(";")]
    tpot = [float(v) for v in row["tpot_ms_per_seq_samples"].split(";")]
    assert ttft == pytest.approx([1000 * r for r in ChunkedPrefillEngine.READY_S] * 3)
    steps = cell.gen_tokens
    expected = [1000 * (PREFILL_S - r + steps * DECODE_S) / steps for r in ChunkedPrefillEngine.READY_S]
    assert tpot == pytest.approx(expected * 3)
    assert tpot[3] == pytest.approx(1000 * DECODE_S)  # the last user's first token ends the prefill
    assert row["ttft_ms_mean"] == pytest.approx(1000 * PREFILL_S)  # the whole prefill, as before


def test_a_speed_only_backend_is_legal_and_declines_quality() -> None:
    engine = RecordingEngine(Path("x"), _cell("llamacpp", "Q4_1"))
    assert not supports_quality(engine)  # no tokenize/logits: quality is skipped for it, with a reason


class WholeCellEngine(CellEngine):
    """An engine that measures a cell itself (as a server measured over HTTP does)."""

    backend = "fake"

    def __init__(self, model_path: Path, load_cell: Cell) -> None:
        self.measured: list[str] = []

    def load(self) -> LoadInfo:
        return LoadInfo(load_s=0.0)

    def start_context(self, cell: Cell) -> dict[str, Any]:
        return {}

    def measure(self, cell: Cell, energy: Any = None) -> dict[str, Any]:
        self.measured.append(cell.cell_id)
        return {"decode_tok_s_mean": 42.0, "warnings": ""}


def test_a_cell_engine_measures_the_whole_cell_itself() -> None:
    cell = _cell("llamacpp", "Q4_1")
    engine = WholeCellEngine(Path("x"), cell)
    fields = measure_fields(engine, cell)
    assert fields["decode_tok_s_mean"] == 42.0 and fields["warnings"] == ""
    assert fields["decode_context_tokens"] == cell.depth + cell.prompt_tokens
    assert engine.measured == [cell.cell_id]  # measured once, by the engine, not by measure_cell
    # Its work may run on another machine: RAPL here would measure the wrong one, and says so.
    assert fields["energy_source"].startswith("not available: the work runs outside this process")
    assert not any(name.startswith("sustain_") for name in fields)  # no sustained mode asked for


class SustainingCellEngine(WholeCellEngine):
    def sustain_chunks(self, cell: Cell) -> Iterator[tuple[int, float]]:
        while True:
            yield 10, 0.5  # 20 tok/s


def test_a_cell_engine_with_sustain_chunks_gets_the_sustained_mode() -> None:
    cell = _cell("llamacpp", "Q4_1").with_values(sustain_s=3, sustain_window_s=1)
    fields = measure_fields(SustainingCellEngine(Path("x"), cell), cell)
    assert fields["sustain_tok_s_samples"] == "20;20;20" and fields["sustain_ratio"] == 1.0
    no_chunks = measure_fields(WholeCellEngine(Path("x"), cell), cell)
    assert no_chunks["sustain_sensors"] == "sustained mode: not available: the fake engine has no sustain_chunks"


def test_a_speed_engine_is_timed_by_measure_cell() -> None:
    cell = _cell("llamacpp", "Q4_1")
    fields = measure_fields(RecordingEngine(Path("x"), cell), cell)
    assert fields["decode_tok_s_mean"] == pytest.approx(1 / DECODE_S)


def test_a_backend_shares_a_knob_another_declared() -> None:
    from dataclasses import replace

    from bench.runners.registry import register_backend
    from bench.suite.knobs import KNOBS

    owner = next(k for k in KNOBS.values() if k.backends is not None)
    try:
        spec = replace(next(iter(BACKENDS.values())), name="sharer", knobs=(), shares_knobs=(owner.name,))
        register_backend(spec)
        assert KNOBS[owner.name].takes("sharer") and all(KNOBS[owner.name].takes(b) for b in owner.backends or ())
    finally:
        BACKENDS.pop("sharer", None)
        KNOBS[owner.name] = owner


def test_sharing_an_unknown_knob_is_an_error() -> None:
    from dataclasses import replace

    from bench.errors import BenchError
    from bench.runners.registry import register_backend

    spec = replace(next(iter(BACKENDS.values())), name="sharer", knobs=(), shares_knobs=("no_such_knob",))
    with pytest.raises(BenchError, match="no_such_knob"):
        register_backend(spec)
    BACKENDS.pop("sharer", None)


def test_every_backend_has_a_tiny_model() -> None:
    assert set(BACKENDS) == set(TINY_MODELS), "add the new backend's tiny model to TINY_MODELS"


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_backend_passes_the_contract(backend: str, request: pytest.FixtureRequest) -> None:
    spec = BACKENDS[backend]
    if spec.missing_reason():
        pytest.skip(spec.missing_reason())
    fixture, quantization = TINY_MODELS[backend]
    model: Path = request.getfixturevalue(fixture)
    spec.check_model_file(model)
    cell = _cell(backend, quantization, depth=8, repetitions=2, warmup=1)
    engine = create_engine(backend, model, cell)
    try:
        info = engine.load()
        assert info.load_s >= 0 and (info.n_params or 0) > 0
        fields = engine.start_context(cell)
        assert fields["n_ctx"] >= cell.depth + cell.prompt_tokens + cell.gen_tokens
        assert fields["threads_used"] == 1
        if isinstance(engine, CellEngine):  # it measures the whole cell itself: the same speed columns come back
            row = engine.measure(cell.model_copy(update={"depth": 0}))  # it serves fresh requests only
            assert row["decode_tok_s_mean"] > 0 and len(row["decode_tok_s_samples"].split(";")) == cell.repetitions
            assert row["ttft_ms_mean"] > 0 and row["itl_ms_p50"] > 0 and not spec.gives_logits
            return
        n_vocab = engine.n_vocab()
        rng = np.random.default_rng(0)
        engine.reset(rng.integers(0, n_vocab, size=(1, cell.depth), dtype=np.int32))
        assert engine.prefill(rng.integers(0, n_vocab, size=(1, 12), dtype=np.int32)) > 0
        steps = engine.decode(rng.integers(0, n_vocab, size=(3, 1), dtype=np.int32))
        assert len(steps) == 3 and all(s > 0 for s in steps)
        if not engine.truncate(cell.depth):
            engine.reset(rng.integers(0, n_vocab, size=(1, cell.depth), dtype=np.int32))
        warmups, measured = measure_cell(engine, cell)
        row = repetition_fields(cell, warmups, measured)
        ttft = [float(v) for v in row["ttft_ms_samples"].split(";")]
        prefill = [float(v) for v in row["prefill_tok_s_samples"].split(";")]
        assert ttft == pytest.approx([1000 * cell.prompt_tokens / p for p in prefill], rel=1e-4)
        if spec.gives_logits:
            assert supports_quality(engine)
            engine.prepare_logits(64, cell)  # type: ignore[attr-defined]
            tokens = engine.tokenize("The bakery opens early.")  # type: ignore[attr-defined]
            logits = engine.logits(tokens)  # type: ignore[attr-defined]
            assert logits.shape == (len(tokens), n_vocab) and logits.dtype == np.float32
            assert np.isfinite(logits).all()
    finally:
        engine.close()
