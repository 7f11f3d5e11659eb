"""Suite files: YAML -> validated pydantic models -> expanded matrix of cells.

Every error names the file, the line and the field, and says what was expected.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.errors import BenchError

BACKENDS = ("llamacpp", "torch")
DEVICE_KINDS = ("cpu", "cuda")

# GGUF quantization types bench knows by name (llama.cpp's `llama-quantize --help`).
GGUF_QUANT_TYPES = (
    "F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0",
    "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0", "IQ4_NL", "IQ4_XS", "Q3_K_L", "Q3_K_M", "Q3_K_S",
    "IQ3_M", "IQ3_S", "IQ3_XS", "IQ3_XXS", "Q2_K", "Q2_K_S", "IQ2_M", "IQ2_S", "IQ2_XS",
    "IQ2_XXS", "IQ1_M", "IQ1_S", "TQ1_0", "TQ2_0",
)
TORCH_QUANT_TYPES = ("fp32", "bf16", "fp16", "int8", "int4")
SOURCE_QUANT = "source"  # the model file as given, no requantization
QUANT_TYPES_BY_BACKEND: dict[str, tuple[str, ...]] = {
    "llamacpp": (SOURCE_QUANT, *GGUF_QUANT_TYPES),
    "torch": TORCH_QUANT_TYPES,
}
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
FLASH_ATTN_VALUES = ("auto", "on", "off")


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(StrictModel):
    """One model. `source` is the file as given; `files` maps quantization -> a prequantized file."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
    source: str | None = None
    source_quantization: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
    allow_requantize: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_a_file(self) -> ModelSpec:
        if self.source is None and not self.files:
            raise ValueError("a model needs `source` (a path, package:<pkg>/<file> or hf://...) or `files`")
        return self


class DeviceSpec(StrictModel):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
    kind: Literal["cpu", "cuda"]
    index: int = Field(default=0, ge=0)
    # Per-device knob overrides (a CPU column wants its own thread counts).
    threads: list[int] | None = None
    n_gpu_layers: list[int | Literal["all"]] | None = None
    memory_bandwidth_gbs: float | None = Field(default=None, gt=0)
    # Memory the planner assumes when bench cannot see this device (planning for a card you do not have);
    # a present device's free memory is used instead.
    memory_gb: float | None = Field(default=None, gt=0)

    _listify = field_validator("threads", "n_gpu_layers", mode="before")(_as_list)


class Workload(StrictModel):
    prompt_tokens: list[int] = Field(default_factory=lambda: [512])
    gen_tokens: int = Field(default=128, ge=1)
    depths: list[int] = Field(default_factory=lambda: [0])
    repetitions: int = Field(default=5, ge=1)
    warmup: int = Field(default=1, ge=0)

    _listify = field_validator("prompt_tokens", "depths", mode="before")(_as_list)

    @field_validator("prompt_tokens")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if not values or any(v < 1 for v in values):
            raise ValueError("prompt_tokens must be a non-empty list of integers >= 1")
        return values

    @field_validator("depths")
    @classmethod
    def _non_negative(cls, values: list[int]) -> list[int]:
        if not values or any(v < 0 for v in values):
            raise ValueError("depths must be a non-empty list of integers >= 0")
        return values


class Knobs(StrictModel):
    """Backend knobs; every list is a matrix axis."""

    threads: list[int] = Field(default_factory=lambda: [0])  # 0 = all physical cores
    n_gpu_layers: list[int | Literal["all"]] = Field(default_factory=lambda: ["all"])
    n_batch: list[int] = Field(default_factory=lambda: [2048])
    n_ubatch: list[int] = Field(default_factory=lambda: [512])
    flash_attn: list[Literal["auto", "on", "off"]] = Field(default_factory=lambda: ["auto"])
    kv_cache_type: list[Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]] = (
        Field(default_factory=lambda: ["f16"])
    )
    mmap: list[bool] = Field(default_factory=lambda: [True])
    # llama.cpp's CPU weight repacking (extra buffer types, incl. AMX); off avoids AMX SIGILL on some VMs.
    repack: list[bool] = Field(default_factory=lambda: [True])
    torch_compile: list[bool] = Field(default_factory=lambda: [False])
    static_cache: list[bool] = Field(default_factory=lambda: [False])

    _listify = field_validator(
        "threads", "n_gpu_layers", "n_batch", "n_ubatch", "flash_attn", "kv_cache_type", "mmap", "repack",
        "torch_compile", "static_cache", mode="before",
    )(_as_list)

    @field_validator("threads")
    @classmethod
    def _threads_non_negative(cls, values: list[int]) -> list[int]:
        if any(v < 0 for v in values):
            raise ValueError("threads must be >= 0 (0 = all physical cores)")
        return values


class Limits(StrictModel):
    cell_timeout_s: float = Field(default=900, gt=0)
    load_timeout_s: float = Field(default=600, gt=0)
    memory_limit_gb: float | None = Field(default=None, gt=0)


class QualitySpec(StrictModel):
    enabled: bool = True
    baseline: str | None = None  # reference quantization (e.g. F16, or source); default: highest precision
    text: str = "builtin"  # "builtin" or a path to a UTF-8 text file
    context: int = Field(default=512, ge=16)
    max_chunks: int = Field(default=8, ge=1)
    tasks: list[str] = Field(default_factory=lambda: ["builtin:arithmetic"])
    task_limit: int = Field(default=50, ge=1)
    top_k: int = Field(default=64, ge=1, le=1024)  # baseline cache: top-k log-probs + k tail samples


class Constraints(StrictModel):
    min_decode_tok_s: float | None = None
    max_kld: float | None = None
    max_ppl_increase_pct: float | None = None
    min_context: int | None = None
    max_memory_gb: float | None = None
    min_task_accuracy: float | None = None


class DeviceCost(StrictModel):
    price_usd: float | None = Field(default=None, ge=0)
    power_w: float | None = Field(default=None, ge=0)
    electricity_usd_per_kwh: float = Field(default=0.15, ge=0)
    amortization_years: float = Field(default=3.0, gt=0)
    utilization: float = Field(default=1.0, gt=0, le=1)


AXES = (
    "model", "quantization", "backend", "device", "threads", "n_gpu_layers", "n_batch", "n_ubatch",
    "flash_attn", "kv_cache_type", "mmap", "repack", "torch_compile", "static_cache", "prompt_tokens", "depth",
)
# Axes that mean nothing to a backend are pinned to None for its cells instead of multiplying them.
BACKEND_AXES: dict[str, frozenset[str]] = {
    "llamacpp": frozenset(AXES) - {"torch_compile", "static_cache"},
    "torch": frozenset(AXES) - {"n_batch", "n_ubatch", "flash_attn", "kv_cache_type", "mmap", "repack"},
}


class Suite(StrictModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
    description: str = ""
    models: list[ModelSpec] = Field(min_length=1)
    quantizations: list[str] | dict[str, list[str]] = Field(default_factory=lambda: [SOURCE_QUANT])
    backends: list[Literal["llamacpp", "torch"]] = Field(default_factory=lambda: ["llamacpp"])
    devices: list[DeviceSpec] = Field(default_factory=lambda: [DeviceSpec(id="cpu", kind="cpu")])
    workload: Workload = Field(default_factory=Workload)
    knobs: Knobs = Field(default_factory=Knobs)
    include: list[dict[str, Any]] = Field(default_factory=list)
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    quality: QualitySpec = Field(default_factory=lambda: QualitySpec(enabled=False))
    constraints: Constraints = Field(default_factory=Constraints)
    costs: dict[str, DeviceCost] = Field(default_factory=dict)

    _listify = field_validator("backends", mode="before")(_as_list)

    @field_validator("models")
    @classmethod
    def _unique_model_ids(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        _reject_duplicates([m.id for m in models], "model id")
        return models

    @field_validator("devices")
    @classmethod
    def _unique_device_ids(cls, devices: list[DeviceSpec]) -> list[DeviceSpec]:
        _reject_duplicates([d.id for d in devices], "device id")
        return devices

    @model_validator(mode="after")
    def _known_quantizations(self) -> Suite:
        for backend in self.backends:
            allowed = QUANT_TYPES_BY_BACKEND[backend]
            for quant in self.quantizations_for(backend):
                if quant not in allowed and not self._is_model_file_quant(quant):
                    raise ValueError(
                        f"unknown quantization {quant!r} for backend {backend}; allowed: {', '.join(allowed)}"
                    )
        if isinstance(self.quantizations, dict):
            unknown = set(self.quantizations) - set(BACKENDS)
            if unknown:
                raise ValueError(f"quantizations keys must be backends ({', '.join(BACKENDS)}), got {sorted(unknown)}")
        for device_id in self.costs:
            # "HOST/DEVICE" prices one machine's device when several machines run the same suite.
            if device_id.rpartition("/")[2] not in {d.id for d in self.devices}:
                raise ValueError(f"costs names device {device_id!r}, which is not in devices "
                                 "(expected a device id, or HOST/DEVICE-ID for one machine)")
        return self

    def _is_model_file_quant(self, quant: str) -> bool:
        return any(quant in m.files or quant == m.source_quantization for m in self.models)

    def quantizations_for(self, backend: str) -> list[str]:
        if isinstance(self.quantizations, dict):
            return list(self.quantizations.get(backend, []))
        return list(self.quantizations)

    def model(self, model_id: str) -> ModelSpec:
        return next(m for m in self.models if m.id == model_id)

    def device(self, device_id: str) -> DeviceSpec:
        return next(d for d in self.devices if d.id == device_id)


def _reject_duplicates(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}: each must be unique")
        seen.add(value)


class Cell(BaseModel):
    """One point of the matrix: what one result row measures."""

    model_config = ConfigDict(frozen=True)

    suite: str
    model_id: str
    quantization: str
    backend: str
    device_id: str
    device_kind: str
    device_index: int
    threads: int | None
    n_gpu_layers: int | None  # -1 = all layers
    n_batch: int | None
    n_ubatch: int | None
    flash_attn: str | None
    kv_cache_type: str | None
    mmap: bool | None
    repack: bool | None
    torch_compile: bool | None
    static_cache: bool | None
    prompt_tokens: int
    gen_tokens: int
    depth: int
    repetitions: int
    warmup: int

    @property
    def cell_id(self) -> str:
        """Stable identity across runs and machines (host is a separate column)."""
        payload = json.dumps(self.model_dump(), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        knobs = [f"t{self.threads}"] if self.threads is not None else []
        if self.device_kind != "cpu" and self.n_gpu_layers is not None:
            knobs.append(f"ngl{'all' if self.n_gpu_layers < 0 else self.n_gpu_layers}")
        return (
            f"{self.model_id} {self.quantization} {self.backend}/{self.device_id} {' '.join(knobs)} "
            f"pp{self.prompt_tokens} tg{self.gen_tokens} @d{self.depth}"
        )

    def axis_value(self, axis: str) -> Any:
        return getattr(self, AXIS_TO_FIELD.get(axis, axis))

    def load_key(self) -> tuple[Any, ...]:
        """Cells sharing this key can share one loaded model in one worker."""
        return (self.model_id, self.quantization, self.backend, self.device_id, self.n_gpu_layers, self.mmap,
                self.repack, self.torch_compile, self.static_cache)


AXIS_TO_FIELD = {"model": "model_id", "device": "device_id"}


# ---------------------------------------------------------------- loading with line numbers


class _LineIndex:
    """Maps a pydantic error location (('models', 0, 'id')) to a YAML line number."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def line_of(self, loc: tuple[Any, ...]) -> int | None:
        node = self.root
        best = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            child = self._child(node, part)
            if child is None:
                break
            node = child
            best = node.start_mark.line + 1
        return best

    @staticmethod
    def _child(node: yaml.Node | None, part: Any) -> yaml.Node | None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    # An unknown key is best located at the key itself.
                    return value
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            return node.value[part]
        return None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _clean_msg(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _validation_message(path: Path, error: ValidationError, lines: _LineIndex) -> str:
    parts = []
    for item in error.errors():
        # pydantic appends the union/literal branch name to the loc; drop non-field tags for display.
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and ("[" in p or p in ("int", "str"))))
        line = lines.line_of(loc)
        where = f"{path}:{line}" if line else str(path)
        msg = _clean_msg(item["msg"])
        if item["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
        got = item.get("input")
        got_text = "" if item["type"] in ("extra_forbidden", "missing") or isinstance(got, dict | list) else f" (got {got!r})"
        parts.append(f"{where}: field `{_format_loc(loc)}`: {msg}{got_text}")
    return "invalid suite:\n  " + "\n  ".join(parts)


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"suite file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"cannot read suite file {path}: {exc}") from None
    return parse_suite(text, path)


def parse_suite(text: str, path: Path) -> Suite:
    try:
        # safe_load/compose build plain data only: no Python object construction from YAML tags.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise BenchError(f"{path}{line}: YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise BenchError(f"{path}: YAML error: {exc}") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path}: a suite must be a YAML mapping with keys name, models, ... (got {type(data).__name__})")
    lines = _LineIndex(root)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise BenchError(_validation_message(path, exc, lines)) from None
    _check_matrix_entries(suite, path, lines)
    return suite


def _check_matrix_entries(suite: Suite, path: Path, lines: _LineIndex) -> None:
    known_ids = {"model": {m.id for m in suite.models}, "device": {d.id for d in suite.devices},
                 "backend": set(suite.backends)}
    for section in ("include", "exclude"):
        for index, entry in enumerate(getattr(suite, section)):
            for key, value in entry.items():
                line = lines.line_of((section, index, key))
                where = f"{path}:{line}" if line else str(path)
                if key not in AXES:
                    raise BenchError(
                        f"{where}: field `{section}[{index}].{key}`: unknown axis {key!r}; allowed: {', '.join(AXES)}"
                    )
                if key in known_ids:
                    for item in _as_list(value):
                        if item not in known_ids[key]:
                            raise BenchError(
                                f"{where}: field `{section}[{index}].{key}`: {item!r} is not a {key} of this suite; "
                                f"known: {', '.join(sorted(known_ids[key]))}"
                            )


# ---------------------------------------------------------------- matrix expansion


def _axis_values(suite: Suite, backend: str, device: DeviceSpec) -> dict[str, list[Any]]:
    knobs = suite.knobs
    relevant = BACKEND_AXES[backend]
    threads = device.threads or knobs.threads
    if device.kind == "cpu":
        n_gpu_layers: list[Any] = [0]
    else:
        n_gpu_layers = list(device.n_gpu_layers or knobs.n_gpu_layers)
    values: dict[str, list[Any]] = {
        "threads": list(threads),
        "n_gpu_layers": [-1 if v == "all" else v for v in n_gpu_layers],
        "n_batch": list(knobs.n_batch),
        "n_ubatch": list(knobs.n_ubatch),
        "flash_attn": list(knobs.flash_attn),
        "kv_cache_type": list(knobs.kv_cache_type),
        "mmap": list(knobs.mmap),
        "repack": list(knobs.repack),
        "torch_compile": list(knobs.torch_compile),
        "static_cache": list(knobs.static_cache),
        "prompt_tokens": list(suite.workload.prompt_tokens),
        "depth": list(suite.workload.depths),
    }
    if backend == "torch":
        values["n_gpu_layers"] = [None]
    return {axis: (vals if axis in relevant else [None]) for axis, vals in values.items()}


def _resolved_quant(model: ModelSpec, quant: str) -> str:
    if quant == SOURCE_QUANT and model.source_quantization:
        return model.source_quantization
    return quant


def _cells_for(suite: Suite, model: ModelSpec, quant: str, backend: str, device: DeviceSpec) -> list[Cell]:
    axes = _axis_values(suite, backend, device)
    names = list(axes)
    cells = []
    for combo in itertools.product(*(axes[n] for n in names)):
        point = dict(zip(names, combo, strict=True))
        cells.append(
            Cell(
                suite=suite.name, model_id=model.id, quantization=_resolved_quant(model, quant), backend=backend,
                device_id=device.id, device_kind=device.kind, device_index=device.index,
                gen_tokens=suite.workload.gen_tokens, repetitions=suite.workload.repetitions,
                warmup=suite.workload.warmup, **point,
            )
        )
    return cells


def _matches(cell: Cell, entry: dict[str, Any]) -> bool:
    for key, value in entry.items():
        wanted = _as_list(value)
        actual = cell.axis_value(key)
        if key == "n_gpu_layers":
            wanted = [-1 if v == "all" else v for v in wanted]
        if actual not in wanted and str(actual) not in [str(w) for w in wanted]:
            return False
    return True


def expand(suite: Suite) -> list[Cell]:
    """The full matrix, minus `exclude` matches, plus `include` slices (like a CI matrix)."""
    full: list[Cell] = []
    for model in suite.models:
        for backend in suite.backends:
            quants = suite.quantizations_for(backend)
            for quant in quants:
                for device in suite.devices:
                    full.extend(_cells_for(suite, model, quant, backend, device))
    kept = [c for c in full if not any(_matches(c, e) for e in suite.exclude)]
    for entry in suite.include:
        kept.extend(_include_slice(suite, entry))
    cells = list(dict.fromkeys(kept))  # dedupe, keep order
    if not cells:
        raise BenchError(
            f"suite {suite.name!r}: the matrix is empty after `exclude`; "
            "remove an exclude entry or add models/devices/quantizations"
        )
    return cells


def _include_slice(suite: Suite, entry: dict[str, Any]) -> list[Cell]:
    """An include entry adds the cells it names; axes it leaves out take all the suite's values."""
    models = [suite.model(m) for m in _as_list(entry.get("model", [m.id for m in suite.models]))]
    backends = _as_list(entry.get("backend", suite.backends))
    devices = [suite.device(d) for d in _as_list(entry.get("device", [d.id for d in suite.devices]))]
    out: list[Cell] = []
    for model in models:
        for backend in backends:
            quants = _as_list(entry.get("quantization", suite.quantizations_for(backend)))
            for quant in quants:
                if quant not in QUANT_TYPES_BY_BACKEND[backend] and quant not in model.files:
                    raise BenchError(
                        f"suite {suite.name!r}: include entry {entry} names quantization {quant!r}, unknown for "
                        f"backend {backend}; allowed: {', '.join(QUANT_TYPES_BY_BACKEND[backend])}"
                    )
                for device in devices:
                    base = _cells_for(suite, model, quant, backend, device)
                    overrides = {k: v for k, v in entry.items() if k not in ("model", "backend", "device", "quantization")}
                    out.extend(_apply_overrides(base, overrides))
    return out


def _apply_overrides(cells: list[Cell], overrides: dict[str, Any]) -> list[Cell]:
    if not overrides:
        return cells
    out = []
    for cell in cells:
        # Each overridden axis takes the entry's value(s) instead of the suite's.
        names = list(overrides)
        for combo in itertools.product(*(_as_list(overrides[n]) for n in names)):
            update = {AXIS_TO_FIELD.get(n, n): (-1 if (n == "n_gpu_layers" and v == "all") else v)
                      for n, v in zip(names, combo, strict=True)}
            out.append(cell.model_copy(update=update))
    return list(dict.fromkeys(out))
