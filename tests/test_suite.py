"""Suite schema, matrix expansion, and error messages that name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.runners.registry import quantization_catalog
from bench.suite import expand, load_suite
from tests.conftest import quick_suite_yaml


def load_checked(path):
    """As `bench run` reads a suite: with the backend registry's quantizations."""
    return load_suite(path, quantization_catalog())


ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_suite_expands_to_threads_times_depths_plus_derived_quantizations() -> None:
    suite = load_checked(ROOT / "suites" / "quickstart.yaml")
    cells = expand(suite)
    points = {(c.quantization, c.threads, c.depth) for c in cells}
    assert points == {
        ("Q4_1", 1, 0),
        ("Q4_1", 1, 512),
        ("Q4_1", 2, 0),
        ("Q4_1", 2, 512),
        ("Q8_0", 2, 0),
        ("Q2_K", 2, 0),
    }
    assert all(c.backend == "llamacpp" and c.n_gpu_layers == 0 for c in cells)
    assert len({c.cell_id for c in cells}) == len(cells)


def test_every_shipped_suite_is_valid() -> None:
    for path in sorted((ROOT / "suites").glob("*.yaml")):
        assert expand(load_checked(path)), path


def test_matrix_exclude_and_include_work_like_a_ci_matrix(write_suite) -> None:
    text = (
        quick_suite_yaml(
            quantizations="quantizations: [Q8_0, Q4_K_M, Q2_K]",
            knobs="knobs: {threads: [1, 2]}",
            workload="workload: {prompt_tokens: [64], gen_tokens: 8, depths: [0, 256], repetitions: 1, warmup: 0}",
        )
        + "exclude:\n  - {quantization: Q2_K}\n  - {depth: 256, threads: 1}\ninclude:\n  - {quantization: Q2_K, threads: 2, depth: 0}\n"
    )
    cells = expand(load_checked(write_suite(text)))
    points = {(c.quantization, c.threads, c.depth) for c in cells}
    assert ("Q2_K", 2, 0) in points  # include adds back exactly this slice
    assert not any(q == "Q2_K" and (t, d) != (2, 0) for q, t, d in points)
    assert not any(t == 1 and d == 256 for _, t, d in points)
    assert ("Q8_0", 2, 256) in points
    assert len(cells) == 2 * 3 + 1


def test_device_knob_overrides_and_gpu_layers(write_suite) -> None:
    text = quick_suite_yaml(
        devices="""
        devices:
          - {id: gpu0, kind: cuda, index: 0, n_gpu_layers: all}
          - {id: cpu, kind: cpu, threads: [4, 8]}
    """
    )
    cells = expand(load_checked(write_suite(text)))
    gpu = [c for c in cells if c.device_id == "gpu0"]
    cpu = [c for c in cells if c.device_id == "cpu"]
    assert {c.n_gpu_layers for c in gpu} == {-1}
    assert {c.threads for c in cpu} == {4, 8} and {c.n_gpu_layers for c in cpu} == {0}


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        # unknown key: named, with its line
        (lambda t: t.replace("gen_tokens: 16", "gen_tokens: 16, warmups: 2"), ["workload:", "unknown key 'warmups'"]),
        # wrong type
        (lambda t: t.replace("repetitions: 2", "repetitions: many"), ["workload:", "workload.repetitions", "'many'"]),
        # unknown quantization lists the allowed ones
        (
            lambda t: t.replace("quantizations: [source]", "quantizations: [Q4_K_Q]"),
            ["unknown quantization 'Q4_K_Q'", "Q4_K_M", "Q8_0"],
        ),
        # wrong literal names the field and the allowed values
        (
            lambda t: t.replace("{id: cpu, kind: cpu}", "{id: cpu, kind: tpu}"),
            ["- {id: cpu", "devices[0].kind", "'cpu'"],
        ),
    ],
)
def test_bad_suites_name_line_and_field(write_suite, mutation, expected) -> None:
    text = mutation(quick_suite_yaml())
    path = write_suite(text)
    with pytest.raises(BenchError) as info:
        load_checked(path)
    message = str(info.value)
    line_marker, *fragments = expected
    if line_marker.endswith(":") or line_marker.startswith("- "):
        # The error must point at the line of the YAML block holding the bad field.
        line = next(n for n, t in enumerate(text.splitlines(), 1) if t.lstrip().startswith(line_marker))
        assert f"{path}:{line}:" in message, message
    else:
        fragments.insert(0, line_marker)
        assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_yaml_syntax_error_names_line(write_suite) -> None:
    path = write_suite("name: x\nmodels:\n  - id: a\n    source: [unclosed\n")
    with pytest.raises(BenchError, match=r"suite.yaml:\d+: YAML syntax error"):
        load_checked(path)


def test_duplicate_model_ids_are_rejected(write_suite) -> None:
    text = quick_suite_yaml(
        models="""
        models:
          - {id: m, source: a.gguf}
          - {id: m, source: b.gguf}
    """
    )
    with pytest.raises(BenchError, match="duplicate model id 'm'"):
        load_checked(write_suite(text))


def test_empty_matrix_after_exclude_is_an_error(write_suite) -> None:
    path = write_suite(quick_suite_yaml() + "exclude:\n  - {device: cpu}\n")
    with pytest.raises(BenchError, match="empty after `exclude`"):
        expand(load_checked(path))


def test_exclude_naming_an_unknown_axis_or_model_is_an_error(write_suite) -> None:
    with pytest.raises(BenchError, match=r"suite.yaml:\d+: field `exclude\[0\].colour`: unknown axis"):
        load_checked(write_suite(quick_suite_yaml() + "exclude:\n  - {colour: red}\n"))
    with pytest.raises(BenchError, match="'nope' is not a model of this suite"):
        load_checked(write_suite(quick_suite_yaml() + "exclude:\n  - {model: nope}\n"))


def test_yaml_tags_cannot_construct_python_objects(write_suite) -> None:
    path = write_suite("name: !!python/object/apply:os.system ['echo pwned']\nmodels: []\n")
    with pytest.raises(BenchError, match="YAML"):
        load_checked(path)


def test_missing_suite_file(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="suite file not found"):
        load_checked(tmp_path / "nope.yaml")
