"""Model references and GGUF files: header reading, metadata, bad files, hf:// references offline."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from bench.errors import BenchError, ModelUnavailable
from bench.models import (
    check_gguf,
    file_type_name,
    gguf_metadata,
    local_model_file,
    read_gguf_header,
    resolve,
)
from bench.runners.llamacpp.quant_types import quant_type_from_name
from tests.conftest import SMOLLM2_REF, quick_suite_yaml

HF_REF = "hf://bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF/DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"


def _bench(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HF_HUB_OFFLINE", None)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    env.update(extra)
    return env


# ----------------------------------------------------------------------------------------- GGUF header


def test_header_reader_agrees_with_the_gguf_package(smollm2_path: Path) -> None:
    from gguf import GGUFReader

    header = read_gguf_header(smollm2_path)
    reference = GGUFReader(str(smollm2_path))
    assert [(t.name, t.offset, t.n_bytes, t.n_elements, t.type_name) for t in header.tensors] == [
        (t.name, int(t.data_offset), int(t.n_bytes), int(t.n_elements), t.tensor_type.name) for t in reference.tensors
    ]
    for key, field in reference.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        if isinstance(value, list) and value and isinstance(value[0], str):
            assert header.fields[key] == len(value), key  # string arrays are kept as their length
        else:
            assert header.fields[key] == pytest.approx(value), key


def test_metadata_of_the_shipped_models(smollm2_path: Path, gemma3_path: Path) -> None:
    smol = gguf_metadata(smollm2_path)
    assert smol["arch"] == "llama" and smol["file_type"] == "Q4_1"
    assert (smol["n_layers"], smol["n_heads"], smol["n_kv_heads"], smol["head_dim"], smol["n_ctx_train"]) == (
        30,
        9,
        3,
        64,
        8192,
    )
    assert 5.0 < smol["bits_per_weight"] < 6.5  # Q4_1 (5 bpw) plus a Q8_0 embedding table
    gemma = gguf_metadata(gemma3_path)
    assert gemma["arch"] == "gemma3" and gemma["file_type"] == "Q4_K_M"
    assert (gemma["n_layers"], gemma["n_heads"], gemma["n_kv_heads"], gemma["head_dim"], gemma["n_ctx_train"]) == (
        18,
        4,
        1,
        256,
        32768,
    )


def test_names_of_quantization_types() -> None:
    assert file_type_name(3) == "Q4_1" and file_type_name(0) == "F32" and file_type_name(15) == "Q4_K_M"
    assert file_type_name(None) == ""
    assert quant_type_from_name(HF_REF) == "Q4_K_M"
    assert quant_type_from_name("models/x-q8_0.gguf@main") == "Q8_0"
    assert quant_type_from_name("SmolLM2-135M-Instruct.Q4_1.gguf") == "Q4_1"
    assert quant_type_from_name("model.gguf") == ""


# ----------------------------------------------------------------------------------------- bad files


def _truncated_copy(source: Path, target: Path, size: int) -> Path:
    with source.open("rb") as handle:
        target.write_bytes(handle.read(size))
    return target


def test_a_file_cut_inside_its_tensor_data_is_reported_truncated(smollm2_path: Path, tmp_path: Path) -> None:
    cut = _truncated_copy(smollm2_path, tmp_path / "cut.gguf", smollm2_path.stat().st_size // 2)
    with pytest.raises(BenchError, match=r"truncated GGUF: tensors need \d+ bytes, the file has \d+"):
        check_gguf(cut)


@pytest.mark.parametrize("size", [12, 3000, 500_000])
def test_a_file_cut_inside_its_header_is_an_error_not_a_crash(smollm2_path: Path, tmp_path: Path, size: int) -> None:
    cut = _truncated_copy(smollm2_path, tmp_path / "cut.gguf", size)
    with pytest.raises(BenchError, match="truncated|unreadable GGUF header"):
        check_gguf(cut)


def test_a_corrupt_header_is_an_error(tmp_path: Path) -> None:
    lying = tmp_path / "lying.gguf"  # claims 2^62 tensors: must not try to allocate them
    lying.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**62, 1) + b"\0" * 64)
    with pytest.raises(BenchError, match="unreadable GGUF header"):
        check_gguf(lying)
    text = tmp_path / "model.gguf"
    text.write_text("definitely not a model")
    with pytest.raises(BenchError, match="not a GGUF file"):
        check_gguf(text)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(BenchError, match="not a GGUF file"):
        check_gguf(empty)


def test_a_truncated_model_fails_its_cells_and_the_run_goes_on(smollm2_path: Path, tmp_path: Path) -> None:
    cut = _truncated_copy(smollm2_path, tmp_path / "cut.gguf", smollm2_path.stat().st_size - 4096)
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        quick_suite_yaml(
            "cut",
            models=f"""
        models:
          - id: cut
            source: {cut}
            source_quantization: Q4_1
        """,
        )
    )
    result = _bench(["run", str(suite), "-o", str(tmp_path / "out.csv"), "-q"], _env(), tmp_path)
    assert result.returncode == 3, result.stderr  # a failed cell: exit 3, its row written
    row = pd.read_csv(tmp_path / "out.csv").iloc[0]
    assert row["status"] == "failed" and "truncated GGUF" in row["reason"] and str(cut) in row["reason"]


# ----------------------------------------------------------------------------------------- references


def test_local_model_file_never_downloads(tmp_path: Path) -> None:
    assert local_model_file(SMOLLM2_REF) == resolve(SMOLLM2_REF).path
    assert local_model_file(str(tmp_path / "absent.gguf")) is None
    assert local_model_file("hf://no-such-org/no-such-repo/file.gguf") is None  # not cached: no network call
    with pytest.raises(ModelUnavailable, match="model file not found"):
        resolve(str(tmp_path / "absent.gguf"))


# A package whose assemble() writes its file in place, as the gemma3 package's does; it fails when a second call
# comes in while one is writing (two at once would write one file together, or read it half written).
SPLIT_PACKAGE = """
import time
from pathlib import Path

def assemble(target):
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    writing = target.with_name(target.name + ".writing")
    writing.touch(exist_ok=False)  # FileExistsError: another assemble() is writing this file now
    try:
        if not target.exists():
            time.sleep(0.5)  # copying the parts
            target.write_bytes(b"whole")
        return target
    finally:
        writing.unlink()
"""


def test_two_processes_assembling_one_packaged_model_take_turns(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """bench holds a lock around a package's assemble(): two processes sharing the cache (two test workers, two
    shells) never read or write a half-assembled file."""
    package = tmp_path / "site" / "bench_test_split_model"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(SPLIT_PACKAGE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    start = threading.Barrier(2)

    def resolve_together() -> Path:
        start.wait()
        return resolve("package:bench_test_split_model/model.gguf").path

    with ThreadPoolExecutor(max_workers=2) as pool:  # flock locks one open file against another, threads too
        paths = list(pool.map(lambda _: resolve_together(), range(2)))
    assert paths[0] == paths[1] == tmp_path / "cache" / "assembled" / "bench_test_split_model" / "model.gguf"
    assert paths[0].read_bytes() == b"whole"


def test_an_offline_hf_reference_is_skipped_and_the_run_goes_on(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        quick_suite_yaml(
            "offline",
            models=f"""
        models:
          - id: smollm2
            source: {SMOLLM2_REF}
            source_quantization: Q4_1
          - id: hub-model
            files: {{Q4_K_M: "{HF_REF}"}}
        """,
            quantizations="quantizations: [source, Q4_K_M]\n",
            workload="workload: {prompt_tokens: [16], gen_tokens: 4, depths: [0], repetitions: 1, warmup: 0}",
            exclude="exclude:\n  - {model: smollm2, quantization: Q4_K_M}\n  - {model: hub-model, quantization: source}\n",
        )
    )
    result = _bench(
        ["run", str(suite), "-o", str(tmp_path / "out.csv"), "-q"],
        _env(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hf-cache")),
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(tmp_path / "out.csv").set_index("model_id")
    assert rows.loc["smollm2", "status"] == "ok"
    skipped = rows.loc["hub-model"]
    assert skipped["status"] == "skipped"
    assert HF_REF in skipped["reason"] and "HF_HUB_OFFLINE" in skipped["reason"]
    assert "local path" in skipped["reason"] and "huggingface-cli download" in skipped["reason"]
    assert skipped["est_total_bytes"] > 0  # planned from the model's known shape all the same


def test_a_prefilled_hf_cache_serves_the_file_offline(smollm2_path: Path, tmp_path: Path) -> None:
    """The documented way to run without the hub: the file in the Hugging Face cache, HF_HUB_OFFLINE=1."""
    cache = tmp_path / "hf-cache"
    snapshot = cache / "models--someone--SmolLM2-GGUF" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    shutil.copy(smollm2_path, snapshot / "smol.gguf")
    (cache / "models--someone--SmolLM2-GGUF" / "refs").mkdir()
    (cache / "models--someone--SmolLM2-GGUF" / "refs" / "main").write_text("a" * 40)
    code = (
        "from bench.models import resolve, local_model_file\n"
        "ref = 'hf://someone/SmolLM2-GGUF/smol.gguf'\n"
        "print(resolve(ref).path == local_model_file(ref), resolve(ref).path.stat().st_size)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=_env(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", str(smollm2_path.stat().st_size)]
