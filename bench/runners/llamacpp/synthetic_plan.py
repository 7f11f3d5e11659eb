"""The memory planner's view of synthetic weights: a catalog shape (bench.models.catalog) as the planner's
ModelShape, so cells on synthetic weights of any known shape or config.json get memory and time estimates
before anything is built. Tensor sizes are the converter's (bench.models.synthetic_gguf.tensor_plan); bytes
are parameters x the quantization's bits per weight, as for any model whose file is not here yet.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bench.errors import BenchError
from bench.models.catalog import TransformerShape
from bench.models.synthetic_gguf import tensor_plan
from bench.models.weights import synthetic_quantization, synthetic_shape
from bench.runners.llamacpp.memory_plan import CellEstimator, ShapeSource
from bench.runners.llamacpp.shapes import SWA_PERIOD_BY_ARCH, ModelShape, is_expert_tensor
from bench.runners.memory import CellMemory, device_budget

if TYPE_CHECKING:
    from bench.hardware import Fingerprint
    from bench.suite import Cell, Suite

_LAYER = re.compile(r"^blk\.(\d+)\.")


def model_shape(shape: TransformerShape, quantization: str) -> ModelShape:
    """The planner's shape of synthetic weights of `shape` at `quantization`."""
    layers = [0] * shape.n_layers
    inputs = outputs = experts = 0
    for tensor in tensor_plan(shape):
        match = _LAYER.match(tensor.name)
        if match:
            layers[int(match.group(1))] += tensor.n_elements
            experts += tensor.n_elements if is_expert_tensor(tensor.name) else 0
        elif tensor.name.startswith("output"):  # output.weight, output_norm.weight
            outputs += tensor.n_elements
        else:  # token_embd.weight, rope_freqs.weight
            inputs += tensor.n_elements
    period = SWA_PERIOD_BY_ARCH.get(shape.arch, 0) if shape.sliding_window else 0
    return ModelShape(
        name=shape.name,
        basis=f"synthetic shape: {shape.name}",
        arch=shape.arch,
        n_layers=shape.n_layers,
        n_heads=shape.n_heads,
        n_kv_heads=(shape.n_kv_heads,) * shape.n_layers,
        head_dim_k=shape.head_dim,
        head_dim_v=shape.head_dim,
        n_embd=shape.n_embd,
        n_ff=shape.n_ff,
        n_vocab=shape.n_vocab,
        n_ctx_train=shape.n_ctx_train,
        layer_params=tuple(layers),
        input_params=inputs,
        output_params=outputs,
        embedding_params=shape.n_vocab * shape.n_embd,
        tied_embeddings=shape.tied_embeddings,
        sliding_window=shape.sliding_window,
        # llama.cpp's fixed period: every period-th layer attends to everything, the others to the window.
        swa_layers=tuple(i % period < period - 1 for i in range(shape.n_layers)) if period else (),
        file_type=quantization,
        n_expert=shape.n_expert,
        n_expert_used=shape.n_expert_used,
        expert_params=experts,
    )


def synthetic_memory(suite: Suite, cells: Sequence[Cell], fingerprint: Fingerprint) -> dict[str, CellMemory]:
    """Each synthetic cell's estimate against its device's budget, by cell id."""
    estimator = CellEstimator({d.id: device_budget(fingerprint, d, suite.limits) for d in suite.devices})
    sources: dict[tuple[str, str], ShapeSource] = {}
    out = {}
    for cell in cells:
        key = (cell.model_id, cell.quantization)
        if key not in sources:
            model = suite.model(cell.model_id)
            try:
                quantization = synthetic_quantization(model, cell.quantization)
                sources[key] = ShapeSource(model_shape(synthetic_shape(model), quantization), quantization)
            except BenchError as exc:
                sources[key] = ShapeSource(None, note=f"no estimate: {exc.message}")
        out[cell.cell_id] = estimator.memory(cell, sources[key])
    return out
