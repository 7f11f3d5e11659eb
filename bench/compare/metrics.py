"""The metrics that compare, export and trend share: one entry per metric, declared once.

Each metric names its results-CSV column (the run's value: a mean over repetitions, a percentile over
all decode steps, or one measurement), its unit and better direction, and where they exist its
per-repetition samples (the same quantity once per repetition, `;`-separated, the noise the gate tests
against) and its standard-deviation column (export's range, trend's error bars).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.numbers import number_text

DEFAULT_THRESHOLD_PCT = 5.0  # how much worse a metric may get before the gate looks at it
MIN_HISTORY_RUNS = 3  # baseline runs from which whole runs, not repetitions, are the unit of the test

MIB = 2.0**20


@dataclass(frozen=True)
class Metric:
    name: str  # what users type, e.g. --threshold decode_tok_s=3
    column: str  # the run's value in the results CSV
    unit: str
    bigger_is_better: bool
    samples: str | None = None  # per-repetition values of this same metric; None: one value per run
    spread: str | None = None  # standard deviation across repetitions, where the CSV has one
    same_input: str | None = None  # column that must match on both sides (quality is measured on a text, decode
    # at a context)
    min_abs_change: float = 0.0  # a smaller change is no change (KLD near 0 has huge relative changes)

    @property
    def display_unit(self) -> str:
        return display_scale(self.unit)[1]

    def scaled(self, value: float) -> float:
        """The value in its display unit (bytes as MiB)."""
        return value / display_scale(self.unit)[0]

    def format(self, value: float) -> str:
        return format_value(value, self.unit)


# Decode figures are compared only between rows that decoded at the same context: rows written before decode
# followed the prompt decoded at `depth` (their column is blank), newer ones at depth + prompt.
DECODE_CONTEXT = "decode_context_tokens"

METRICS: tuple[Metric, ...] = (
    Metric("prefill_tok_s", "prefill_tok_s_mean", "tok/s", True, "prefill_tok_s_samples", "prefill_tok_s_std"),
    Metric(
        "decode_tok_s",
        "decode_tok_s_mean",
        "tok/s",
        True,
        "decode_tok_s_samples",
        "decode_tok_s_std",
        same_input=DECODE_CONTEXT,
    ),
    # What each of the cell's `parallel` users gets: aggregate / sequences. Its noise is the aggregate's
    # per-repetition samples: a cell's sequence count is part of its cell_id, so both sides divide by the same N
    # and the t statistic is the aggregate's.
    Metric(
        "decode_tok_s_per_seq",
        "decode_tok_s_per_seq_mean",
        "tok/s",
        True,
        "decode_tok_s_samples",
        same_input=DECODE_CONTEXT,
    ),
    Metric("ttft_ms", "ttft_ms_mean", "ms", False, "ttft_ms_samples"),
    Metric("itl_ms_p50", "itl_ms_p50", "ms", False, "itl_ms_p50_samples", same_input=DECODE_CONTEXT),
    Metric("itl_ms_p90", "itl_ms_p90", "ms", False, "itl_ms_p90_samples", same_input=DECODE_CONTEXT),
    Metric("itl_ms_p99", "itl_ms_p99", "ms", False, "itl_ms_p99_samples", same_input=DECODE_CONTEXT),
    # Served figures (a server backend's rows; one value per load point and run)
    Metric("request_throughput_rps", "request_throughput_rps", "req/s", True),
    Metric("ttft_ms_p99", "ttft_ms_p99", "ms", False),
    Metric("tpot_ms_p99", "tpot_ms_p99", "ms", False),
    Metric("capacity_rps", "capacity_rps", "req/s", True),
    Metric("peak_rss_bytes", "peak_rss_bytes", "bytes", False),
    Metric("peak_vram_bytes", "peak_vram_bytes", "bytes", False),
    Metric(
        "energy_j_per_token",
        "energy_j_per_decode_token",
        "J/token",
        False,
        "energy_j_per_decode_token_samples",
        same_input=DECODE_CONTEXT,
    ),
    Metric("ppl", "ppl", "", False, same_input="eval_text_sha256"),
    Metric("kld_mean", "kld_mean", "nats", False, same_input="eval_text_sha256", min_abs_change=1e-3),
    Metric("task_accuracy_pct", "task_accuracy_pct", "%", True, same_input="task_sha256"),
)
METRICS_BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}


def display_scale(unit: str) -> tuple[float, str]:
    """Divisor and unit a value is shown in: bytes as MiB, the rest as measured."""
    return (MIB, "MiB") if unit == "bytes" else (1.0, unit)


def format_value(value: float, unit: str) -> str:
    """As the report writes numbers (bench.numbers); bytes as MiB with the unit."""
    divisor, shown = display_scale(unit)
    text = number_text(value / divisor)
    return f"{text} {shown}" if divisor != 1.0 else text
