"""The suite schema: pydantic models for what a suite file may say.

Backend knobs are not fields here: `knobs:` and a device's overrides are checked against the knob registry
(bench.suite.knobs) when the suite is loaded, with file and line (bench.suite.load). Nor are backends' own blocks
(a top-level block named after a backend): each is validated by the model its backend registered
(bench.suite.blocks) and kept in `Suite.blocks`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from bench.suite.blocks import BLOCKS, block_of_knob
from bench.suite.knobs import KNOBS

SOURCE_QUANT = "source"  # the model file as given, no requantization
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]*$"
# Which quantizations each backend accepts, by backend name: given by the backend registry
# (bench.runners.registry.quantization_catalog) to the loader; the schema itself names no backend.
QuantCatalog = Mapping[str, Sequence[str]]
# A check of one model the suite layer cannot make itself (that a synthetic shape exists, given by the models
# layer to the loader): (field path under the model, message) for each problem; the loader adds file and line.
ModelCheck = Callable[["ModelSpec"], list[tuple[tuple[str, ...], str]]]

GB = 10**9  # the suite's *_gb fields are decimal gigabytes, as named (a GiB is 2**30)


def as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SYNTHETIC_PREFIX = "synthetic:"  # source: synthetic:<known name>: a known shape with random weights


class SyntheticConfig(StrictModel):
    """`synthetic: {config: path/to/config.json}`: the shape of a Hugging Face config.json (a path relative to
    the suite file; the loader makes it absolute)."""

    config: str = Field(min_length=1)


class ModelSpec(StrictModel):
    """One model. `source` is the file as given; `files` maps quantization -> a prequantized file.

    Synthetic weights (the model's exact shape, random values: speed and memory only): `source:
    synthetic:<known name>`, or `synthetic: <known name> | {config: ...}` without files; or, with real files,
    `fallback: synthetic` plus `synthetic:` the shape to use when the files are not on the machine.
    """

    id: str = Field(min_length=1, pattern=ID_PATTERN)
    source: str | None = None
    source_quantization: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
    allow_requantize: bool = False
    synthetic: str | SyntheticConfig | None = None
    fallback: Literal["synthetic"] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_weights(self) -> ModelSpec:
        named = self.source is not None and self.source.startswith(SYNTHETIC_PREFIX)
        if named and not self.source.removeprefix(SYNTHETIC_PREFIX).strip():  # type: ignore[union-attr]
            raise ValueError("`source: synthetic:` needs a known shape's name, e.g. synthetic:SmolLM2-135M")
        if named and (self.synthetic is not None or self.files or self.fallback):
            raise ValueError(
                "a `source: synthetic:<name>` model has no files, `synthetic:` or `fallback:`: "
                "its source already names its shape"
            )
        real = (self.source is not None and not named) or bool(self.files)
        if not real and not named and self.synthetic is None:
            raise ValueError(
                "a model needs `source` (a path, package:<pkg>/<file>, hf://... or synthetic:<known name>), "
                "`files`, or `synthetic: {config: path/to/config.json}`"
            )
        if real and self.fallback and self.synthetic is None:
            raise ValueError(
                "`fallback: synthetic` needs the shape to use when the files are absent: add "
                "`synthetic: <known name>` (e.g. DeepSeek-R1-Distill-Qwen-1.5B) or "
                "`synthetic: {config: path/to/config.json}`"
            )
        if real and self.synthetic is not None and not self.fallback:
            raise ValueError(
                "`synthetic:` on a model with real files is the shape of its fallback: add `fallback: synthetic` "
                "to use synthetic weights when the files are not on this machine"
            )
        if not real and self.fallback:
            raise ValueError("`fallback: synthetic` is for a model with real files (`source` or `files`)")
        return self

    @property
    def synthetic_only(self) -> bool:
        """Always synthetic weights: no real file to prefer."""
        return self.synthetic_shape_ref is not None and not self.fallback

    @property
    def synthetic_shape_ref(self) -> str | SyntheticConfig | None:
        """The synthetic shape: a known name, or a config.json; None for a model with real files only."""
        if self.source is not None and self.source.startswith(SYNTHETIC_PREFIX):
            return self.source.removeprefix(SYNTHETIC_PREFIX).strip()
        return self.synthetic


class DeviceSpec(BaseModel):
    """A device column. Keys other than these are per-device knob overrides (e.g. `threads: [1, 2]`),
    checked against the knob registry by the loader."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1, pattern=ID_PATTERN)
    kind: Literal["cpu", "cuda"]
    index: int = Field(default=0, ge=0)
    memory_bandwidth_gbs: float | None = Field(default=None, gt=0)
    # Memory the planner assumes when bench cannot see this device (planning for a card you do not have), in
    # GB (1e9 bytes, as every *_gb field); a present device's free memory is used instead.
    memory_gb: float | None = Field(default=None, gt=0)

    def overrides(self) -> dict[str, list[Any]]:
        """Per-device knob values, parsed (lists)."""
        return {
            name: [KNOBS[name].parsed(v) for v in as_list(values)]
            for name, values in (self.__pydantic_extra__ or {}).items()
            if name in KNOBS
        }


class Workload(StrictModel):
    prompt_tokens: list[int] = Field(default_factory=lambda: [512])
    gen_tokens: int = Field(default=128, ge=1)
    depths: list[int] = Field(default_factory=lambda: [0])
    repetitions: int = Field(default=5, ge=1)
    warmup: int = Field(default=1, ge=0)
    # Sustained mode: keep decoding this long after the repetitions, speed and machine state per window.
    sustain_s: float = Field(default=0, ge=0, le=24 * 3600)
    sustain_window_s: float = Field(default=10, gt=0)

    _listify = field_validator("prompt_tokens", "depths", mode="before")(as_list)

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

    @model_validator(mode="after")
    def _a_window_fits(self) -> Workload:
        if 0 < self.sustain_s < self.sustain_window_s:
            raise ValueError(
                f"sustain_s ({self.sustain_s:g} s) is shorter than one sustain_window_s ({self.sustain_window_s:g} s): "
                "give a longer sustain_s or a shorter window"
            )
        return self


class Limits(StrictModel):
    cell_timeout_s: float = Field(default=900, gt=0)
    load_timeout_s: float = Field(default=600, gt=0)
    memory_limit_gb: float | None = Field(default=None, gt=0)  # GB: 1e9 bytes
    # Skip a cell whose planner estimate (bench.plan.time_estimate) is longer: hours-long cells on a slow
    # machine are left out with their estimate, not attempted.
    max_cell_estimate_minutes: float | None = Field(default=None, gt=0)


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
    max_memory_gb: float | None = None  # GB: 1e9 bytes
    min_task_accuracy: float | None = None


# MLPerf Inference's latency limits for LLMs in its Server scenario (99th percentiles): time to first token
# and time per output token, in ms (mlcommons/inference, loadgen/mlperf.conf).
SLO_PRESETS: dict[str, tuple[float, float]] = {
    "mlperf-llama2-70b-server": (2000, 200),
    "mlperf-llama2-70b-interactive": (450, 40),
    "mlperf-llama3.1-8b-server": (2000, 100),
    "mlperf-llama3.1-8b-interactive": (500, 30),
    "mlperf-deepseek-r1-server": (2000, 80),
    "mlperf-deepseek-r1-interactive": (1500, 15),
}


class Slo(StrictModel):
    """The service level a user must get for a concurrency to count as served (bench report's Capacity).

    max_ttft_ms bounds the time to first token of the last user in a batch; min_user_tok_s bounds each user's
    decode speed (equivalently max_tpot_ms = 1000 / min_user_tok_s, time per output token). A preset fills
    both from MLPerf's limits; fields given beside it take precedence. Both limits hold at `percentile` of the
    requests (MLPerf's are 99th percentiles), never on average."""

    preset: Literal[tuple(SLO_PRESETS)] | None = None  # type: ignore[valid-type]
    max_ttft_ms: float | None = Field(default=None, gt=0)
    min_user_tok_s: float | None = Field(default=None, gt=0)
    percentile: Literal[50, 90, 99] = 99  # the result rows keep token-time percentiles 50, 90 and 99

    @model_validator(mode="after")
    def _something_to_meet(self) -> Slo:
        if self.preset is None and self.max_ttft_ms is None and self.min_user_tok_s is None:
            raise ValueError(f"an slo needs max_ttft_ms, min_user_tok_s or a preset ({', '.join(SLO_PRESETS)})")
        return self

    def limits(self) -> tuple[float | None, float | None]:
        """(max TTFT ms, min per-user tok/s), the preset's where the suite gives none."""
        ttft, tpot = SLO_PRESETS[self.preset] if self.preset else (None, None)
        user_tok_s = 1000.0 / tpot if tpot else None
        return (
            self.max_ttft_ms if self.max_ttft_ms is not None else ttft,
            self.min_user_tok_s if self.min_user_tok_s is not None else user_tok_s,
        )

    def describe(self) -> str:
        ttft, user = self.limits()
        parts = [f"TTFT <= {ttft:g} ms" if ttft else "", f">= {user:g} tok/s per user" if user else ""]
        text = " and ".join(p for p in parts if p) + f", at p{self.percentile}"
        return f"{text} ({self.preset})" if self.preset else text


class DeviceCost(StrictModel):
    price_usd: float | None = Field(default=None, ge=0)
    power_w: float | None = Field(default=None, ge=0)
    electricity_usd_per_kwh: float = Field(default=0.15, ge=0)
    amortization_years: float = Field(default=3.0, gt=0)
    utilization: float = Field(default=1.0, gt=0, le=1)


class Suite(StrictModel):
    name: str = Field(min_length=1, pattern=ID_PATTERN)
    description: str = ""
    models: list[ModelSpec] = Field(min_length=1)
    quantizations: list[str] | dict[str, list[str]] = Field(default_factory=lambda: [SOURCE_QUANT])
    backends: list[str] = Field(min_length=1)  # a file that names none gets the registry's first (load.py)
    devices: list[DeviceSpec] = Field(default_factory=lambda: [DeviceSpec(id="cpu", kind="cpu")])
    workload: Workload = Field(default_factory=Workload)
    knobs: dict[str, Any] = Field(default_factory=dict)  # knob name -> value or list (the registry checks)
    include: list[dict[str, Any]] = Field(default_factory=list)
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    quality: QualitySpec = Field(default_factory=lambda: QualitySpec(enabled=False))
    constraints: Constraints = Field(default_factory=Constraints)
    costs: dict[str, DeviceCost] = Field(default_factory=dict)
    slo: Slo = Field(default_factory=lambda: Slo(preset="mlperf-llama3.1-8b-server"))
    # Generated-token budgets for the report's "time to answer" (a reasoning model thinks this long).
    thinking_budgets: list[int] = Field(default_factory=lambda: [4096, 16384])
    # Backends' own blocks by name (`server: {url: ...}` in the file), each validated by its registered model.
    blocks: dict[str, Any] = Field(default_factory=dict)

    _listify = field_validator("backends", "thinking_budgets", mode="before")(as_list)

    @model_validator(mode="wrap")
    @classmethod
    def _backend_blocks(cls, data: Any, handler: ModelWrapValidatorHandler[Suite]) -> Suite:
        """Take each registered block out of the file's top level and validate it by its model; every problem,
        the block's and the rest's, is reported at once with its location (the block's name first)."""
        if not isinstance(data, dict):
            return handler(data)
        errors: list[InitErrorDetails] = []
        if "blocks" in data:  # the field is filled from the named blocks, never written
            errors.append(_unknown_key(("blocks",), data["blocks"], "a backend's block is written by its name"))
        blocks: dict[str, Any] = {}
        for name, block in BLOCKS.items():
            if name not in data:
                continue
            try:
                blocks[name] = block.model.model_validate(data[name])
            except ValidationError as exc:
                errors += [_block_error(name, block.model, item) for item in exc.errors()]
        rest = {k: v for k, v in data.items() if k not in BLOCKS and k != "blocks"}
        try:
            suite = handler({**rest, "blocks": blocks})
        except ValidationError as exc:
            if not errors:
                raise
            errors = [*_details(exc), *errors]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return suite

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
    def _costs_name_devices(self) -> Suite:
        for device_id in self.costs:
            # "HOST/DEVICE" prices one machine's device when several machines run the same suite.
            if device_id.rpartition("/")[2] not in {d.id for d in self.devices}:
                raise ValueError(
                    f"costs names device {device_id!r}, which is not in devices "
                    "(expected a device id, or HOST/DEVICE-ID for one machine)"
                )
        return self

    def knob_values(self, name: str) -> list[Any]:
        """The suite's values of one knob (parsed): its block's field when a backend's block sets it, else
        `knobs:`, else the knob's default."""
        owner = block_of_knob(name)
        if owner is not None:
            block = self.blocks.get(owner[0])
            value = getattr(block, owner[1]) if block is not None else None
            return [KNOBS[name].default if value is None else KNOBS[name].parsed(value)]
        if name not in self.knobs:
            return [KNOBS[name].default]
        knob = KNOBS[name]
        return [point for v in as_list(self.knobs[name]) for point in knob.points(knob.parsed(v))]

    def is_model_file_quant(self, quant: str) -> bool:
        return any(quant in m.files or quant == m.source_quantization for m in self.models)

    def quantizations_for(self, backend: str) -> list[str]:
        if isinstance(self.quantizations, dict):
            return list(self.quantizations.get(backend, []))
        return list(self.quantizations)

    def model(self, model_id: str) -> ModelSpec:
        return next(m for m in self.models if m.id == model_id)

    def device(self, device_id: str) -> DeviceSpec:
        return next(d for d in self.devices if d.id == device_id)


def _unknown_key(loc: tuple[str | int, ...], value: Any, allowed: str) -> InitErrorDetails:
    message = f"unknown key {loc[-1]!r}; {allowed}"
    return {"type": PydanticCustomError("unknown_key", message), "loc": loc, "input": value}


def _block_error(name: str, model: type[BaseModel], item: Any) -> InitErrorDetails:
    """One of a block's errors, located under the block's name; an unknown key lists the block's fields."""
    loc = (name, *item["loc"])
    if item["type"] == "extra_forbidden":
        return _unknown_key(loc, item["input"], f"`{name}:` takes {', '.join(model.model_fields)}")
    return {"type": PydanticCustomError(item["type"], item["msg"]), "loc": loc, "input": item["input"]}


def _details(exc: ValidationError) -> list[InitErrorDetails]:
    return [
        {"type": PydanticCustomError(e["type"], e["msg"]), "loc": e["loc"], "input": e["input"]} for e in exc.errors()
    ]


def _reject_duplicates(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}: each must be unique")
        seen.add(value)
