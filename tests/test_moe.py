"""A mixture of experts is charged its used experts per token: in the planner's model facts, the row, the time
estimate and the decode roofline (issue 23 item 1). Qwen3-30B-A3B (the catalog's config.json shape): 128
experts per layer, 8 used per token; 30.5 B parameters, of which a token goes through 3.35 B (Qwen's model card
says 3.3 B activated)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.models.catalog import known_shape
from bench.plan import PlannedCell, estimate_cell_times
from bench.plan.time_estimate import DECODE_BANDWIDTH_SHARE, LOAD_BYTES_PER_S, WORKER_START_S, DeviceRate
from bench.report.derived import roofline
from bench.runners.llamacpp.memory_plan import CellEstimator, ShapeSource
from bench.runners.llamacpp.shapes import weights_for
from bench.runners.llamacpp.synthetic_plan import model_shape
from bench.runners.memory import Budget, CellMemory
from tests.conftest import cpu_cell

GIB = 2**30


@pytest.fixture(scope="module")
def qwen3_moe() -> CellMemory:
    shape = model_shape(known_shape("Qwen3-30B-A3B"), "Q4_K_M")
    cell = cpu_cell("llamacpp", "Q4_K_M", model_id="qwen3-30b-a3b", prompt_tokens=512, gen_tokens=128, threads=4)
    estimator = CellEstimator({"cpu": Budget(256 * GIB, None, "test")})
    return estimator.memory(cell, ShapeSource(shape, "Q4_K_M"))


def test_the_active_parameters_are_the_used_experts_share_plus_every_other_weight() -> None:
    shape = model_shape(known_shape("Qwen3-30B-A3B"), "Q4_K_M")
    assert (shape.n_expert, shape.n_expert_used) == (128, 8)
    assert shape.n_params == pytest.approx(30.5e9, rel=0.01)
    others = shape.n_params - shape.expert_params  # attention, router, norms, embeddings, head
    assert shape.n_active_params == others + shape.expert_params * 8 // 128
    assert shape.n_active_params == pytest.approx(3.35e9, rel=0.01)
    dense = model_shape(known_shape("Gemma-3-270M"), "Q8_0")
    assert dense.expert_params == 0 and dense.n_active_params == dense.n_params


def test_the_planner_passes_the_active_parameters_to_the_facts_and_the_row(qwen3_moe: CellMemory) -> None:
    assert qwen3_moe.model is not None
    assert qwen3_moe.model.active_share == pytest.approx(3.35 / 30.53, rel=0.01)
    assert qwen3_moe.row_fields()["n_active_params"] == qwen3_moe.model.n_active_params


def test_the_time_estimate_computes_and_reads_the_active_experts_only(qwen3_moe: CellMemory) -> None:
    cell = cpu_cell("llamacpp", "Q4_K_M", model_id="qwen3-30b-a3b", prompt_tokens=512, gen_tokens=128, threads=4)
    rate = DeviceRate("cpu", bandwidth_gbs=50.0, bandwidth_source="assumed", flops=50e9, cores=8)
    [time] = estimate_cell_times([PlannedCell(cell, memory=qwen3_moe)], rates={"cpu": rate}).values()
    estimate, model = qwen3_moe.estimate, qwen3_moe.model
    assert estimate is not None and model is not None and model.n_active_params is not None
    prompt_flops = 512 * 2 * model.n_active_params + model.attention_flops_per_position * 512**2 / 2
    kv_per_position = estimate.kv_bytes / estimate.n_ctx
    # the KV read at the decode's mean context: after the 512-token prompt, plus half the generated tokens
    decode_bytes = 128 * (estimate.weights_bytes * model.active_share + kv_per_position * (512 + 128 / 2))
    repetition = prompt_flops / (4 * 50e9) + decode_bytes / (50e9 * DECODE_BANDWIDTH_SHARE)
    load = WORKER_START_S + estimate.weights_bytes / LOAD_BYTES_PER_S  # loading reads every expert
    assert time.seconds == pytest.approx(cell.repetitions * repetition + load)


def test_the_roofline_charges_a_decode_step_the_active_experts() -> None:
    shape = model_shape(known_shape("Qwen3-30B-A3B"), "Q4_K_M")
    weights = weights_for(shape, "Q4_K_M")
    file_bytes = sum(weights.layers) + weights.input + weights.output
    frame = pd.DataFrame(
        {
            "n_params": [shape.n_params, shape.n_params],
            "n_active_params": [shape.n_active_params, np.nan],  # the second: a row without the column's value
            "bits_per_weight": [np.nan, np.nan],
            "model_file_bytes": [file_bytes, file_bytes],
            "tied_embeddings": [False, False],
            "token_embd_bytes": [0.0, 0.0],
            "kv_cache_bytes": [0.0, 0.0],
            "est_kv_bytes": [0.0, 0.0],  # depth 0: the weights alone
            "n_ctx": [4096, 4096],
            "depth": [0, 0],
            "gen_tokens": [128, 128],
            "parallel": [1, 1],
            "bandwidth_gbs": [100.0, 100.0],
            "decode_tok_s_mean": [20.0, 20.0],
        }
    )
    bound = roofline(frame)
    moe, all_weights = bound["bytes_per_step"].tolist()
    assert all_weights == file_bytes
    assert moe == pytest.approx(file_bytes * shape.n_active_params / shape.n_params)
    assert bound["roofline_tok_s"].iloc[0] / bound["roofline_tok_s"].iloc[1] == pytest.approx(9.1, rel=0.02)
