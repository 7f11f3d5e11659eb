"""`bench compare --history DIR`: each host's newest run against the runs before it.

With at least MIN_HISTORY_RUNS baseline runs (`--last N`), whole runs are the unit: each baseline run
contributes its value (its mean over repetitions), the baseline is the mean of those run means, and the
current run is tested against their spread, which holds the night-to-night drift that repetitions
measured back to back in one process do not show. With fewer, repetitions are pooled, and a note says so.
"""

from __future__ import annotations

from pathlib import Path

from bench.compare import notes
from bench.compare.matching import sides_from_frame, sides_from_runs
from bench.compare.model import CellKey, CellSide, CompareOptions, Comparison
from bench.compare.verdict import compare_sides, finish, new_comparison
from bench.errors import BenchError
from bench.results import read_results

LAYOUT = "expected DIR/<host>/<UTC time>.csv from `bench run --history DIR`"


def history_runs(directory: Path) -> dict[str, list[Path]]:
    """DIR/<host>/<UTC time>.csv as written by `bench run --history DIR`: per host, runs oldest first."""
    if not directory.is_dir():
        raise BenchError(f"--history {directory}: not a folder ({LAYOUT})")
    runs = {host.name: sorted(host.glob("*.csv")) for host in sorted(directory.iterdir()) if host.is_dir()}
    runs = {host: files for host, files in runs.items() if files}
    if not runs:
        raise BenchError(f"--history {directory}: no runs found ({LAYOUT})")
    return runs


def _chosen_hosts(runs: dict[str, list[Path]], directory: Path, host: str | None) -> dict[str, list[Path]]:
    if host is None:
        return runs
    if host not in runs:
        raise BenchError(f"--host {host}: no runs under {directory / host}; hosts there: {', '.join(runs)}")
    return {host: runs[host]}


def compare_history(directory: Path, last: int, options: CompareOptions, host: str | None = None) -> Comparison:
    """Per host: the newest run against the `last` runs before it (one run: the previous night)."""
    if last < 1:
        raise BenchError(f"--last {last}: expected a number of runs >= 1")
    runs = _chosen_hosts(history_runs(directory), directory, host)
    comparison = new_comparison([], [], options)
    all_baseline: dict[CellKey, CellSide] = {}
    all_current: dict[CellKey, CellSide] = {}
    for name, files in runs.items():
        if len(files) < 2:
            comparison.notes.append(f"{name}: only one run ({files[0].name}), nothing to compare with yet")
            continue
        previous = files[-1 - last : -1]
        comparison.baseline += [str(p) for p in previous]
        comparison.current.append(str(files[-1]))
        baseline = sides_from_runs([read_results([p]) for p in previous], options.across_machines)
        current = sides_from_frame(read_results([files[-1]]), options.across_machines)
        compare_sides(baseline, current, options, comparison)
        all_baseline.update({(name, *k): v for k, v in baseline.items()})
        all_current.update({(name, *k): v for k, v in current.items()})
    if not comparison.current:
        comparison.reason = (
            f"no host under {directory} has two runs yet ({', '.join(f'{h}: {len(f)}' for h, f in runs.items())})"
        )
    notes.add_history_note(comparison)
    return finish(comparison, all_baseline, all_current, options)
