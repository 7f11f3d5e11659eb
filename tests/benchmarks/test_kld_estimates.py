"""KLD estimates against the exact KLD on real models: prints the figures bench/quality/numerics.py quotes.

SmolLM2-135M and Gemma-3-270M, each requantized to F16, Q8_0, Q4_K_M and Q2_K; the built-in text, context 512,
4 chunks (1,020 scored positions), the default top-k. For each quantization against F16: the mean of the
unbiased estimate and the quantiles of the deterministic one, as ratios to the exact figures over the whole
vocabulary. (tests/test_quality.py asserts SmolLM2's p99 and mean; this prints both models.)

It took 13.5 minutes for both models on a shared 2-core machine, so it runs only with BENCH_KLD_BENCHMARK=1:
    BENCH_KLD_BENCHMARK=1 pytest -s tests/benchmarks/test_kld_estimates.py
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from bench.quality import (
    chunk_input,
    chunk_targets,
    exact_kld,
    kld_estimates,
    load_eval_text,
    log_softmax,
    standalone_cell,
    top_k_summary,
)
from bench.runners.llamacpp.runner import LlamaCppRunner
from bench.suite import ModelSpec, QualitySpec, Suite
from tests.conftest import GEMMA3_REF, SMOLLM2_REF

LADDER = ("F16", "Q8_0", "Q4_K_M", "Q2_K")
CONTEXT, CHUNKS = 512, 4


def _ladder(reference: str, source_quantization: str) -> dict[str, LlamaCppRunner]:
    from bench.runners.llamacpp.quantize import derived_model

    model = ModelSpec(id="m", source=reference, source_quantization=source_quantization, allow_requantize=True)
    suite = Suite(name="kld", models=[model], quantizations=list(LADDER), backends=["llamacpp"])
    cell = standalone_cell(threads=0, context=CONTEXT)
    runners = {}
    for quant in LADDER:
        runner = LlamaCppRunner(derived_model(suite, model, quant).path, cell)
        runner.load()
        runner.prepare_logits(CONTEXT, cell)
        runners[quant] = runner
    return runners


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BENCH_KLD_BENCHMARK"), reason="set BENCH_KLD_BENCHMARK=1 to run it")
@pytest.mark.parametrize(
    ("reference", "source_quantization"), [(SMOLLM2_REF, "Q4_1"), (GEMMA3_REF, "Q4_K_M")], ids=["smollm2", "gemma3"]
)
def test_kld_estimates_against_the_exact_kld(reference: str, source_quantization: str) -> None:
    runners = _ladder(reference, source_quantization)
    tokens = runners["F16"].tokenize(load_eval_text("builtin").text, add_bos=True)
    bos = runners["F16"].bos_token()
    rng = np.random.default_rng(0)
    figures: dict[str, dict[str, list[np.ndarray]]] = {
        q: {"exact": [], "unbiased": [], "bucketed": []} for q in LADDER[1:]
    }
    tail_mass = []
    try:
        for index in range(CHUNKS):  # one chunk at a time: Gemma's rows are 262,144 wide
            chunk = chunk_input(tokens, index, CONTEXT, bos)
            rows = slice(CONTEXT // 2, CONTEXT - 1)
            base = log_softmax(runners["F16"].logits(chunk)[rows])
            top = top_k_summary(base, chunk_targets(tokens, index, CONTEXT), QualitySpec().top_k, rng)
            tail_mass.append(np.exp(top.log_tail.astype(np.float64)))
            for quant in LADDER[1:]:
                model = log_softmax(runners[quant].logits(chunk)[rows])
                estimate = kld_estimates(top, model)
                figures[quant]["exact"].append(exact_kld(base, model))
                figures[quant]["unbiased"].append(estimate.unbiased)
                figures[quant]["bucketed"].append(estimate.bucketed)
    finally:
        for runner in runners.values():
            runner.close()
    print(
        f"\n{reference}: {sum(len(t) for t in tail_mass)} positions, "
        f"{100 * np.concatenate(tail_mass).mean():.1f} % of the mass outside the top k on average"
    )
    for quant, parts in figures.items():
        exact, unbiased, bucketed = (np.concatenate(parts[name]) for name in ("exact", "unbiased", "bucketed"))
        assert (bucketed <= exact + 1e-6).all()  # a lower bound at every position
        ratios = {
            "mean": unbiased.mean() / exact.mean(),
            "median": np.median(bucketed) / np.median(exact),
            "p99": np.percentile(bucketed, 99) / np.percentile(exact, 99),
            "max": bucketed.max() / exact.max(),
            "bucket-only mean": bucketed.mean() / exact.mean(),
        }
        print(
            f"  {quant:7} exact mean {exact.mean():.5f}; estimate / exact: "
            + ", ".join(f"{name} {ratio:.3f}" for name, ratio in ratios.items())
        )
