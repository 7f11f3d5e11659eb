"""The result row's columns: the fixed ones (README documents them) plus one per registered knob."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields as dataclass_fields
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model

from bench.hardware.fingerprint import MachineColumns
from bench.missing import is_missing
from bench.suite.knobs import KNOBS

Weights = Literal["real", "synthetic"]
Status = Literal["ok", "failed", "timeout", "skipped"]


class _FixedColumns(BaseModel):
    """The CSV schema without the knobs and the machine (README documents it). Units are in the column names.
    `ResultRow` (below) is this plus one column per registered knob and the machine columns (MachineColumns)."""

    model_config = ConfigDict(extra="forbid")

    # --- identity of the cell (see bench.suite.Cell)
    run_id: str = ""
    suite: str = ""
    cell_id: str = ""
    status: Status = "ok"
    reason: str = ""
    model_id: str = ""
    model_source: str = ""
    model_file: str = ""
    quantization: str = ""
    derived_from: str = ""
    weights: Weights = "real"  # synthetic: the model's shape with random values (speed and memory only)
    weights_shape: str = ""  # the synthetic shape: a known model name or a config.json path
    backend: str = ""
    device_id: str = ""
    device_kind: str = ""
    device_index: int | None = None
    prompt_tokens: int | None = None
    gen_tokens: int | None = None
    depth: int | None = None
    repetitions: int | None = None
    warmup: int | None = None
    sustain_s: float | None = None  # the sustained mode's length asked for (0: none) and its window
    sustain_window_s: float | None = None
    threads_used: int | None = None  # what `threads` resolved to (0 = every usable core)
    started_utc: str = ""
    finished_utc: str = ""

    # --- speed (values from measured repetitions; warm-ups kept apart)
    prefill_tok_s_mean: float | None = None
    prefill_tok_s_std: float | None = None
    prefill_tok_s_median: float | None = None
    prefill_tok_s_cv_pct: float | None = None
    decode_tok_s_mean: float | None = None
    decode_tok_s_std: float | None = None
    decode_tok_s_median: float | None = None
    decode_tok_s_cv_pct: float | None = None
    decode_tok_s_per_seq_mean: float | None = None  # with parallel N: what each sequence (user) gets
    ttft_ms_mean: float | None = None
    ttft_ms_median: float | None = None
    itl_ms_p50: float | None = None
    itl_ms_p90: float | None = None
    itl_ms_p99: float | None = None
    load_s: float | None = None
    prefill_tok_s_samples: str = ""  # one value per repetition, ';'-separated
    decode_tok_s_samples: str = ""
    ttft_ms_samples: str = ""
    itl_ms_p50_samples: str = ""  # per repetition: that repetition's token-latency percentile
    itl_ms_p90_samples: str = ""
    itl_ms_p99_samples: str = ""
    # Each sequence's (user's) time to first token and time per output token, every repetition (repetition by
    # repetition, sequence by sequence): with `parallel` N, N values per repetition. Burst capacity judges its
    # SLO's percentile on these (bench.report.slo_check). Blank in rows written before they were kept.
    ttft_ms_per_seq_samples: str = ""
    tpot_ms_per_seq_samples: str = ""
    # Tokens each sequence held in its KV cache when its decode started: depth + prompt_tokens (decode follows
    # the prompt, as llama-batched-bench). Blank in rows written before: those decoded at `depth`.
    decode_context_tokens: int | None = None
    # bench's timed interval vs llama.cpp's own eval time for the same calls, in percent
    prefill_overhead_pct: float | None = None
    decode_overhead_pct: float | None = None
    warmup_prefill_tok_s: str = ""
    warmup_decode_tok_s: str = ""
    unstable: bool | None = None
    warnings: str = ""
    system_warnings: str = ""  # noise sources present on the machine when the cell was measured (bench hw)
    background_cpu_pct: float | None = None  # other processes' CPU use during the cell, % of the machine

    # --- serving: a backend measured over HTTP, per request from the stream (its speed columns above: output tok/s
    # of all users per round in decode_tok_s_*, per user in decode_tok_s_per_seq_mean; prefill = prompt / TTFT).
    # Percentiles over every measured request (ITL: every inter-token gap), in ms on the client's clock.
    ttft_ms_p50: float | None = None  # first token of any kind, reasoning included
    ttft_ms_p90: float | None = None
    ttft_ms_p99: float | None = None
    answer_ttft_ms_p50: float | None = None  # first answer token: after `reasoning_content` or `</think>`
    answer_ttft_ms_p90: float | None = None
    answer_ttft_ms_p99: float | None = None
    tpot_ms_p50: float | None = None  # per request: (last token - first token) / (output tokens - 1)
    tpot_ms_p90: float | None = None
    tpot_ms_p99: float | None = None
    e2e_ms_p50: float | None = None  # request sent to its last byte
    e2e_ms_p90: float | None = None
    e2e_ms_p99: float | None = None
    request_throughput_rps: float | None = None  # successful requests per second, all users
    requests_measured: int | None = None
    request_errors: int | None = None  # HTTP errors (429, 5xx), refused or broken connections, timeouts, bad streams
    requests_truncated: int | None = None  # finish reason `length` while the model was free to stop (blank: held)
    cached_prompt_tokens_mean: float | None = None  # prompt tokens the server reused from its cache, as it says
    reasoning_tokens_mean: float | None = None
    answer_tokens_mean: float | None = None
    server_prompt_ms_p50: float | None = None  # the server's own per-request timings (llama-server's `timings`)
    server_predicted_per_token_ms_p50: float | None = None
    http_overhead_ttft_ms: float | None = None  # median of client TTFT minus the server's prompt_ms
    http_overhead_tpot_ms: float | None = None  # median of client time per token minus the server's
    # what answered the requests: blank for bench's in-process engine; llama-server (bench started it), or a
    # server a suite's block names, by its own name (vLLM, Ollama) or its host:port; its URL is the server_url knob
    served_by: str = ""
    server_version: str = ""  # the server's own word: /props, /version or /api/version
    server_models: str = ""  # its /v1/models ids, ';'-separated
    # --- served load: one row per load point of the `load` knob (bench.runners.server.loadpoint). Figures over
    # the measured requests: sent after the warm-up, before the cool-down; incomplete ones counted apart.
    load_rate_rps: float | None = None  # the arrival rate the point's schedule offered (blank: closed loop, burst)
    load_span_s: float | None = None  # first measured send to last measured end: the window of the rates
    e2e_ms_mean: float | None = None  # mean time a request spends, sent to last byte (users = rate x this)
    requests_sent: int | None = None
    requests_warmup: int | None = None  # the first sent, left out
    requests_cooldown: int | None = None  # the last sent, left out
    requests_incomplete: int | None = None  # still running at the point's bound: cancelled, never measured
    tpot_ms_samples: str = ""  # per measured request, aligned with ttft_ms_samples (goodput against any SLO)
    # requests/s meeting every limit of the point's SLO (its slo_ttft_ms / slo_tpot_ms knobs), each request on
    # its own, over load_span_s; blank in rows from before it was kept (the report computes it from the samples)
    goodput_rps: float | None = None
    queue_ms_p50: float | None = None  # TTFT minus the server's prompt_ms: waiting for a slot (and HTTP)
    queue_ms_p90: float | None = None
    queue_ms_p99: float | None = None
    schedule_lag_ms_p50: float | None = None  # actual minus intended send time, every request sent
    schedule_lag_ms_p90: float | None = None
    schedule_lag_ms_p99: float | None = None
    client_cpu_pct: float | None = None  # the load generator's CPU over the point, % of one core
    client_limited: bool | None = None  # lag or client CPU past its limit: the client, not the server, limited
    capacity_rps: float | None = None  # load capacity: the largest rate meeting the SLO's limits at its percentile
    capacity_resolution_rps: float | None = None  # the bisection's final bracket: the true rate is below +this
    capacity_binding: str = ""  # the limit the next rate up broke: ttft, tpot, errors (blank: none broke)
    capacity_probes: str = ""  # every probe, 'rate:p99 ttft ms/p99 tpot ms', ';'-separated

    # --- memory
    model_file_bytes: int | None = None
    n_params: int | None = None
    n_active_params: int | None = None  # what one token goes through: a mixture of experts' used experts only
    peak_rss_bytes: int | None = None  # the worker process's peak, interpreter and libraries included
    rss_before_load_bytes: int | None = None  # the worker's resident memory before the model was loaded
    model_rss_bytes: int | None = None  # peak minus before-load: what the model, context and batches took
    memory_limit_enforced_by: str = ""  # cgroup_memory_max | rss_watchdog (limits.memory_limit_gb), blank: none
    peak_vram_bytes: int | None = None
    kv_cache_bytes: int | None = None
    model_buffers_bytes: int | None = None  # llama.cpp's own buffer sizes (its load log)
    compute_buffer_bytes: int | None = None
    model_weights_bytes: int | None = None  # the backend's count of the weights' bytes
    n_ctx: int | None = None
    est_weights_bytes: int | None = None
    est_kv_bytes: int | None = None
    est_compute_bytes: int | None = None
    est_total_bytes: int | None = None
    # KV bytes one more context position adds (a sliding-window layer with a window-sized cache, swa_full false,
    # adds none): what "largest context that fits" grows by. Blank in older rows: est_kv_bytes / n_ctx then.
    est_kv_bytes_per_token: float | None = None
    est_device_free_bytes: int | None = None
    # CPU: measured by bench.hardware.bandwidth's read probe (bytes read per second); CUDA: NVML's theoretical peak
    mem_bandwidth_gbs: float | None = None
    mem_bandwidth_source: str = ""  # cpu_read_probe | nvml_theoretical_peak: what mem_bandwidth_gbs is

    # --- energy (bench.hardware.energy: NVML's GPU board counter, or RAPL's CPU package [+ DRAM]), idle included
    energy_j_per_decode_token: float | None = None
    energy_j_per_decode_token_samples: str = ""
    avg_power_w: float | None = None
    # nvml_board | nvml_board_power_samples | rapl_package | rapl_dram+package | "not available: <why>"
    energy_source: str = ""
    idle_power_w: float | None = None  # the device at rest before the group's first cell (same source)
    energy_net_j_per_decode_token: float | None = None  # minus idle_power_w over the decode time

    # --- sustained mode (workload.sustain_s): decoding kept up after the repetitions, per window of decode time
    sustain_burst_tok_s: float | None = None  # the first window
    sustain_tok_s: float | None = None  # the median of the last third of the windows
    sustain_ratio: float | None = None  # sustained / burst
    sustain_throttle_s: float | None = None  # decode seconds until a window first fell 5 % below burst; blank: never
    sustain_throttle_reasons: str = ""  # throttle reasons seen in any window, in words, ';'-separated
    sustain_t_s_samples: str = ""  # per window: its end, decode seconds since the sustained mode began
    sustain_tok_s_samples: str = ""
    sustain_temp_c_samples: str = ""  # per window, the device's temperature at its end (nan: no reading)
    sustain_clock_mhz_samples: str = ""  # GPU SM clock or CPU mean frequency
    sustain_power_w_samples: str = ""  # the energy counter over the window
    sustain_sensors: str = ""  # sensors not read ('name: not available: why; ...'), and why the mode stopped early

    # --- model metadata (GGUF header)
    arch: str = ""
    model_desc: str = ""
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    head_dim: int | None = None
    n_ctx_train: int | None = None
    n_ctx_rope_scaled: int | None = None  # RoPE scaling factor x original context, when the GGUF declares it
    file_type: str = ""
    bits_per_weight: float | None = None
    token_embd_bytes: int | None = None  # the token-embedding table (decode reads one row of it per token)
    tied_embeddings: bool | None = None  # the output head is the embedding table (no output.weight)

    # --- quality (once per model x quantization x backend, joined onto every row of it)
    baseline_quantization: str = ""
    eval_text_sha256: str = ""
    eval_tokens: int | None = None
    ppl: float | None = None
    ppl_stderr: float | None = None
    ppl_ratio: float | None = None
    kld_mean: float | None = None
    kld_stderr: float | None = None
    kld_median: float | None = None
    kld_p99: float | None = None
    kld_max: float | None = None
    top1_agreement_pct: float | None = None
    dp_correct_mean_pct: float | None = None
    dp_correct_rms_pct: float | None = None
    task_name: str = ""
    task_sha256: str = ""
    task_accuracy_pct: float | None = None
    task_accuracy_stderr_pct: float | None = None
    task_items: int | None = None


def _knob_columns() -> dict[str, Any]:
    """One column per registered knob (bench.suite.knobs), after the cell's device columns."""
    return {name: (knob.type | None, None) for name, knob in KNOBS.items()}


def _machine_columns() -> dict[str, Any]:
    """The machine fingerprint and software columns, last: bench.hardware's MachineColumns, field by field."""
    return {f.name: (f.type, f.default) for f in dataclass_fields(MachineColumns)}


def _row_model() -> type[BaseModel]:
    """The row schema: the fixed columns plus the knob registry's (a test may register a knob before import)."""
    fields = dict(_FixedColumns.model_fields)
    names = list(fields)
    at = names.index("device_index") + 1
    knob_fields = _knob_columns()
    order = [*names[:at], *knob_fields, *names[at:]]
    definitions: dict[str, Any] = {n: (fields[n].annotation, fields[n]) for n in names}
    definitions.update(knob_fields)
    machine = _machine_columns()
    definitions.update(machine)
    order += list(machine)
    return create_model("ResultRow", __config__=ConfigDict(extra="forbid"), **{n: definitions[n] for n in order})


ResultRow = _row_model()
COLUMNS: tuple[str, ...] = tuple(ResultRow.model_fields)


# Software columns of CSVs written before each backend's software went into backend_version / backend_build:
# old column -> (the backend whose rows it described, the column it is read as).
LEGACY_SOFTWARE_COLUMNS: dict[str, tuple[str, str]] = {
    "llama_cpp_python_version": ("llamacpp", "backend_version"),
    "llama_cpp_build": ("llamacpp", "backend_build"),
    "torch_version": ("torch", "backend_version"),
}

# --- how values are written to and read from a CSV field
SAMPLE_SEP = ";"  # per-repetition samples in one field


def csv_text(value: Any) -> str:
    """A value as its CSV field: floats to 6 decimals (tiny ones in exponent form), None as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.9g}"  # nine significant digits: a KLD of 1e-5 keeps them, as a tok/s of 12,345.6 does
    return str(value)


def samples_to_text(values: Iterable[float]) -> str:
    return SAMPLE_SEP.join(csv_text(v) for v in values)


def samples_from_text(text: Any) -> list[float]:
    if is_missing(text):
        return []
    return [float(v) for v in str(text).split(SAMPLE_SEP) if v]
