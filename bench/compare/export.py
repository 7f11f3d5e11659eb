"""`bench export`: results in the formats other benchmark tools read.

- `pytest-benchmark`: the JSON `pytest --benchmark-json` writes, so `pytest-benchmark compare` and
  github-action-benchmark's `tool: pytest` read it. One benchmark per cell and phase (prefill, decode);
  a round is one repetition and its time is seconds per token, so `ops` is tokens per second. Other
  metrics (TTFT, memory, quality) ride along in `extra_info`. One machine per file (pytest-benchmark
  has one `machine_info`): pick it with --host when the results hold several.
- `github-action-benchmark`: its custom JSON, a list of {name, unit, value, range?, extra?}. The action
  takes one direction per file, so `--direction bigger` writes the metrics where bigger is better
  (tok/s, task accuracy: `tool: customBiggerIsBetter`) and `--direction smaller` the others (TTFT, ITL,
  memory, energy, perplexity, KLD: `tool: customSmallerIsBetter`).

Only ok rows are exported, the newest per cell and machine (bench.results.select).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from bench import __version__
from bench.compare.metrics import DECODE_CONTEXT, METRICS, METRICS_BY_NAME, Metric
from bench.errors import BenchError
from bench.results import read_results, samples_from_text
from bench.results.select import MACHINE_KEY, clean, newest_rows, row_label
from bench.stats import UNSTABLE_CV_PCT, summarize

FORMATS = ("pytest-benchmark", "github-action-benchmark")
DIRECTIONS = {"bigger": "customBiggerIsBetter", "smaller": "customSmallerIsBetter"}
PHASES = ("prefill", "decode")


def _clean(value: Any) -> Any:
    """A CSV value as JSON takes it: None when missing, numpy scalars as Python numbers."""
    value = clean(value)
    return value.item() if hasattr(value, "item") else value


def measured_rows(paths: list[Path], host: str | None = None) -> pd.DataFrame:
    frame = read_results(paths)
    if host is not None:
        frame = frame[frame["host"] == host]
    rows = newest_rows(frame)
    rows = rows[rows["status"] == "ok"]
    if rows.empty:
        where = f" for host {host}" if host else ""
        raise BenchError(f"{', '.join(map(str, paths))}: no ok result rows{where} to export")
    return rows


# ---------------------------------------------------------------------------------- pytest-benchmark


def _quartiles(ordered: Sequence[float]) -> tuple[float, float]:
    """Q1 and Q3 as pytest-benchmark computes them (Wikipedia's methods 2 and 3)."""
    rounds = len(ordered)
    if rounds == 1:
        return ordered[0], ordered[0]
    if rounds % 2:
        n, q = rounds // 4, rounds % 4
        if q == 1:
            return 0.25 * ordered[n - 1] + 0.75 * ordered[n], 0.75 * ordered[3 * n] + 0.25 * ordered[3 * n + 1]
        return 0.75 * ordered[n] + 0.25 * ordered[n + 1], 0.25 * ordered[3 * n + 1] + 0.75 * ordered[3 * n + 2]
    half = rounds // 2
    return statistics.median(ordered[:half]), statistics.median(ordered[half:])


def benchmark_stats(data: Sequence[float]) -> dict[str, Any]:
    """pytest-benchmark's `stats` object for these round times (seconds)."""
    ordered = sorted(data)
    summary = summarize(data)
    mean, stddev = summary.mean, summary.std
    q1, q3 = _quartiles(ordered)
    iqr = q3 - q1
    low_fence, high_fence = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    iqr_outliers = sum(1 for v in data if v < low_fence or v > high_fence)
    stddev_outliers = sum(1 for v in data if v < mean - stddev or v > mean + stddev)
    total = math.fsum(data)
    return {
        "min": ordered[0],
        "max": ordered[-1],
        "mean": mean,
        "stddev": stddev,
        "rounds": summary.n,
        "median": summary.median,
        "iqr": iqr,
        "q1": q1,
        "q3": q3,
        "iqr_outliers": iqr_outliers,
        "stddev_outliers": stddev_outliers,
        "outliers": f"{stddev_outliers};{iqr_outliers}",
        "ld15iqr": ordered[bisect_left(ordered, low_fence)],
        "hd15iqr": ordered[bisect_right(ordered, high_fence) - 1],
        "ops": len(data) / total if total else 0.0,
        "total": total,
        "data": list(data),
        "iterations": 1,
    }


def _param(row: pd.Series) -> str:
    return f"{row_label(row).replace(' ', '-')}-{row['cell_id']}"


def _extra_info(row: pd.Series, phase: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cell_id": row["cell_id"],
        "host": _clean(row["host"]),
        "fingerprint": _clean(row["fingerprint"]),
        "machine": row[MACHINE_KEY],
        "unit": f"seconds per {phase} token (ops = {phase} tokens/s)",
    }
    for metric in METRICS:
        value = _clean(row.get(metric.column))
        if value is not None:
            info[metric.column] = value
    for column in ("unstable", "warnings", "model_file", "started_utc", DECODE_CONTEXT):  # where decode ran
        value = _clean(row.get(column))
        if value not in (None, ""):
            info[column] = value
    return info


def _benchmark(row: pd.Series, phase: str) -> dict[str, Any] | None:
    rate = METRICS_BY_NAME[f"{phase}_tok_s"]
    samples = samples_from_text(_clean(row.get(rate.samples)))
    mean = _clean(row.get(rate.column))
    rates = [s for s in samples if s > 0] or ([float(mean)] if mean else [])
    if not rates:
        return None
    name = f"test_{phase}[{_param(row)}]"
    params = {
        column: _clean(row.get(column))
        for column in (
            "model_id",
            "quantization",
            "backend",
            "device_id",
            "threads",
            "n_gpu_layers",
            "parallel",
            "prompt_tokens",
            "gen_tokens",
            "depth",
        )
    }
    warmup = _clean(row.get("warmup"))
    return {
        "group": phase,
        "name": name,
        "fullname": f"{row['suite']}::{name}",
        "params": params,
        "param": _param(row),
        "extra_info": _extra_info(row, phase),
        "options": {
            "disable_gc": False,
            "timer": "perf_counter",
            "min_rounds": len(rates),
            "max_time": 0.0,
            "min_time": 0.0,
            "warmup": bool(warmup),
        },
        "stats": benchmark_stats([1.0 / r for r in rates]),
    }


def _machine_info(row: pd.Series) -> dict[str, Any]:
    return {
        "node": _clean(row["host"]) or "",
        "processor": _clean(row["cpu_arch"]) or "",
        "machine": _clean(row["cpu_arch"]) or "",
        "python_compiler": "",
        "python_implementation": "CPython",
        "python_implementation_version": _clean(row["python_version"]) or "",
        "python_version": _clean(row["python_version"]) or "",
        "python_build": [],
        "release": "",
        "system": _clean(row["os"]) or "",
        "cpu": {
            "brand_raw": _clean(row["cpu_brand"]) or "",
            "arch_string_raw": _clean(row["cpu_arch"]) or "",
            "count": _clean(row["cpu_logical_cores"]),
            "flags": str(_clean(row["cpu_flags"]) or "").split(),
        },
        "gpu": {
            "name": _clean(row["gpu_name"]) or "",
            "vram_total_bytes": _clean(row["gpu_vram_total_bytes"]),
            "driver": _clean(row["gpu_driver"]) or "",
            "cuda_version": _clean(row["cuda_version"]) or "",
        },
        "bench": {
            "fingerprint": _clean(row["fingerprint"]),
            "bench_version": _clean(row["bench_version"]),
            "backend": _clean(row["backend"]) or "",
            "backend_version": _clean(row["backend_version"]),
            "backend_build": _clean(row["backend_build"]),
        },
    }


def _commit_info(project: str) -> dict[str, Any]:
    """From the CI environment where there is one (GitHub Actions sets these)."""
    return {
        "id": os.environ.get("GITHUB_SHA", "unversioned"),
        "time": None,
        "author_time": None,
        "dirty": False,
        "project": os.environ.get("GITHUB_REPOSITORY", project),
        "branch": os.environ.get("GITHUB_REF_NAME", "(unknown)"),
    }


def pytest_benchmark_json(rows: pd.DataFrame) -> dict[str, Any]:
    machines = sorted(set(rows[MACHINE_KEY].astype(str)))
    if len(machines) > 1:
        hosts = ", ".join(sorted(set(rows["host"].astype(str))))
        raise BenchError(
            f"the results hold {len(machines)} machines ({hosts}); a pytest-benchmark file describes "
            "one machine: export each with --host HOST"
        )
    first = rows.iloc[0]
    started = rows["started_utc"].dropna()
    when = pd.Timestamp(started.max()).isoformat() if len(started) else datetime.now(UTC).isoformat()
    benchmarks = [b for _, row in rows.iterrows() for phase in PHASES if (b := _benchmark(row, phase))]
    if not benchmarks:
        raise BenchError("no row has prefill or decode measurements to export")
    return {
        "machine_info": _machine_info(first),
        "commit_info": _commit_info(str(first["suite"])),
        "benchmarks": benchmarks,
        "datetime": when,
        "version": __version__,
    }


# ---------------------------------------------------------------------------------- github-action-benchmark


def _custom_entry(row: pd.Series, metric: Metric, value: float, label: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": f"{metric.name} {label} on {row['host']} [{row['cell_id']}]",
        "unit": metric.display_unit or metric.name,
        "value": metric.scaled(value),
    }
    std = _clean(row.get(metric.spread)) if metric.spread else None
    if std is not None:
        entry["range"] = f"± {metric.scaled(float(std)):.6g}"
    extra = [f"cell_id: {row['cell_id']}", f"fingerprint: {_clean(row['fingerprint'])}", f"machine: {row[MACHINE_KEY]}"]
    if _clean(row.get("repetitions")) is not None:
        extra.append(f"repetitions: {int(row['repetitions'])}")
    if _clean(row.get("unstable")):
        extra.append(f"unstable: spread over {UNSTABLE_CV_PCT:g}% CV across repetitions")
    entry["extra"] = "\n".join(extra)
    return entry


def github_action_benchmark_json(rows: pd.DataFrame, direction: str) -> list[dict[str, Any]]:
    """Entries for `tool: customBiggerIsBetter` (direction 'bigger') or `customSmallerIsBetter`."""
    bigger = direction == "bigger"
    entries = []
    for _, row in rows.iterrows():
        label = row_label(row)
        for metric in (m for m in METRICS if m.bigger_is_better == bigger):
            value = _clean(row.get(metric.column))
            if value is None:
                continue
            entries.append(_custom_entry(row, metric, float(value), label))
    if not entries:
        raise BenchError(f"no {direction}-is-better metric was measured in these results")
    return entries


# ---------------------------------------------------------------------------------- CLI


def export(paths: list[Path], fmt: str, output: Path, direction: str | None = None, host: str | None = None) -> Path:
    rows = measured_rows(paths, host)
    if fmt == "pytest-benchmark":
        document: Any = pytest_benchmark_json(rows)
    else:
        if direction not in DIRECTIONS:
            raise BenchError(
                "--format github-action-benchmark needs --direction bigger (tok/s, accuracy: "
                "tool customBiggerIsBetter) or --direction smaller (latency, memory, quality: "
                "tool customSmallerIsBetter)"
            )
        document = github_action_benchmark_json(rows, direction)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot write {output}: {exc.strerror or exc}") from None
    return output
