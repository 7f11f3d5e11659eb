"""Reading a suite file: YAML -> schema -> registry checks, every error with file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bench.errors import BenchError
from bench.suite.blocks import SECRET_INPUT, block_of_knob, settings_source
from bench.suite.knobs import KNOBS
from bench.suite.schema import ModelCheck, QuantCatalog, Suite, SyntheticConfig, as_list

WORKLOAD_AXES = ("prompt_tokens", "depth")


def axes() -> tuple[str, ...]:
    """The names usable in include/exclude/--only: the matrix's axes (a knob a backend's block sets is said
    once, in the block)."""
    return ("model", "quantization", "backend", "device", *_writable(), *WORKLOAD_AXES)


class LineIndex:
    """Maps a field location (('models', 0, 'id')) to a YAML line number."""

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
                    return value
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            return node.value[part]
        return None


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class _Where:
    """Builds `file:line: field `x`: message` for one suite file."""

    def __init__(self, path: Path, lines: LineIndex) -> None:
        self.path, self.lines = path, lines

    def error(self, loc: tuple[Any, ...], message: str) -> BenchError:
        line = self.lines.line_of(loc)
        where = f"{self.path}:{line}" if line else str(self.path)
        return BenchError(f"invalid suite:\n  {where}: field `{format_loc(loc)}`: {message}")


def _validation_message(path: Path, error: ValidationError, lines: LineIndex) -> str:
    parts = []
    for item in error.errors():
        # pydantic appends the union/literal branch name to the loc; drop non-field tags for display.
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and ("[" in p or p in ("int", "str"))))
        line = lines.line_of(loc)
        where = f"{path}:{line}" if line else str(path)
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
        got = item.get("input")
        skip = item["type"] in ("extra_forbidden", "missing", "unknown_key", SECRET_INPUT) or isinstance(
            got, dict | list
        )
        parts.append(f"{where}: field `{format_loc(loc)}`: {msg}{'' if skip else f' (got {got!r})'}")
    return "invalid suite:\n  " + "\n  ".join(parts)


def load_suite(path: str | Path, catalog: QuantCatalog, model_check: ModelCheck | None = None) -> Suite:
    """Read and check a suite: structure, knobs, and against `catalog` (backend -> quantizations, given by
    the backend registry: bench.runners.registry.quantization_catalog()) its backends and quantizations;
    `model_check` (bench.models.synthetic_model_problems) checks each model's synthetic shape."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"suite file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"cannot read suite file {path}: {exc}") from None
    return parse_suite(text, path, catalog, model_check)


def parse_suite(text: str, path: Path, catalog: QuantCatalog, model_check: ModelCheck | None = None) -> Suite:
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
        raise BenchError(
            f"{path}: a suite must be a YAML mapping with keys name, models, ... (got {type(data).__name__})"
        )
    lines = LineIndex(root)
    if "backends" not in data and catalog:  # a suite that names no backend measures with the first registered
        data = {**data, "backends": [next(iter(catalog))]}
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise BenchError(_validation_message(path, exc, lines)) from None
    where = _Where(path, lines)
    suite = _anchor_synthetic_configs(suite, path)
    if model_check is not None:
        for index, model in enumerate(suite.models):
            for loc, message in model_check(model):
                raise where.error(("models", index, *loc), message)
    _check_knobs(suite, where)
    _check_backends(suite, catalog, where)
    _check_matrix_entries(suite, where, catalog)
    return suite


def _anchor_synthetic_configs(suite: Suite, path: Path) -> Suite:
    """`synthetic: {config: ...}` paths are relative to the suite file: made absolute here, once."""
    models = []
    for model in suite.models:
        if isinstance(model.synthetic, SyntheticConfig):
            config = (path.parent / Path(model.synthetic.config).expanduser()).absolute()
            model = model.model_copy(update={"synthetic": SyntheticConfig(config=str(config))})
        models.append(model)
    return suite.model_copy(update={"models": models})


def _check_values(name: str, values: Any, loc: tuple[Any, ...], where: _Where) -> None:
    knob = KNOBS[name]
    items = as_list(values)
    if not items:
        raise where.error(loc, f"{name} needs at least one value ({knob.help})")
    for index, raw in enumerate(items):
        problem = knob.check(knob.parsed(raw))
        if problem:
            item_loc = (*loc, index) if isinstance(values, list) else loc
            raise where.error(item_loc, f"{problem} (got {raw!r}); {name}: {knob.help}")


def _writable() -> list[str]:
    return [name for name in KNOBS if block_of_knob(name) is None and settings_source(name) is None]


def _check_knobs(suite: Suite, where: _Where) -> None:
    for name, values in suite.knobs.items():
        if name not in KNOBS:
            raise where.error(("knobs", name), f"unknown knob {name!r}; known: {', '.join(_writable())}")
        owner = block_of_knob(name)
        if owner is not None:
            block, field = owner
            raise where.error(
                ("knobs", name), f"{name} is set in the suite's `{block}:` block: write `{block}: {{{field}: ...}}`"
            )
        source = settings_source(name)
        if source is not None:
            raise where.error(("knobs", name), f"{name} is filled from the suite's `{source}`: set it there")
        _check_values(name, values, ("knobs", name), where)
    per_device = [k.name for k in KNOBS.values() if k.per_device]
    for index, device in enumerate(suite.devices):
        for name, values in (device.__pydantic_extra__ or {}).items():
            if name not in KNOBS or not KNOBS[name].per_device:
                raise where.error(
                    ("devices", index, name),
                    f"unknown key {name!r}; a device takes id, kind, "
                    f"index, memory_bandwidth_gbs, memory_gb and the knobs {', '.join(per_device)}",
                )
            _check_values(name, values, ("devices", index, name), where)


def _check_backends(suite: Suite, catalog: QuantCatalog, where: _Where) -> None:
    for index, backend in enumerate(suite.backends):
        if backend not in catalog:
            raise where.error(("backends", index), f"unknown backend {backend!r}; known: {', '.join(catalog)}")
    for name in suite.blocks:  # a backend's block names the backend it configures
        if name not in suite.backends:
            raise where.error(
                (name,),
                f"`{name}:` configures backend {name}, which backends does not name ({', '.join(suite.backends)})",
            )
    if isinstance(suite.quantizations, dict):
        for backend in suite.quantizations:
            if backend not in catalog:
                raise where.error(
                    ("quantizations", backend),
                    f"quantizations keys must be backends ({', '.join(catalog)}), got {backend!r}",
                )
    for backend in suite.backends:
        allowed = catalog[backend]
        for position, quant in enumerate(suite.quantizations_for(backend)):
            if quant not in allowed and not suite.is_model_file_quant(quant):
                loc = (
                    ("quantizations", backend, position)
                    if isinstance(suite.quantizations, dict)
                    else ("quantizations", position)
                )
                raise where.error(
                    loc, f"unknown quantization {quant!r} for backend {backend}; allowed: {', '.join(allowed)}"
                )


def _check_matrix_entries(suite: Suite, where: _Where, catalog: QuantCatalog) -> None:
    known_ids = {
        "model": {m.id for m in suite.models},
        "device": {d.id for d in suite.devices},
        "backend": set(suite.backends),
    }
    names = axes()
    for section in ("include", "exclude"):
        for index, entry in enumerate(getattr(suite, section)):
            for key, value in entry.items():
                loc = (section, index, key)
                if key not in names:
                    raise where.error(loc, f"unknown axis {key!r}; allowed: {', '.join(names)}")
                if key in known_ids:
                    for item in as_list(value):
                        if item not in known_ids[key]:
                            raise where.error(
                                loc,
                                f"{item!r} is not a {key} of this suite; known: {', '.join(sorted(known_ids[key]))}",
                            )
                if key in KNOBS:
                    _check_values(key, value, loc, where)
            if section == "include" and "quantization" in entry:
                backends = as_list(entry.get("backend", suite.backends))
                models = [suite.model(m) for m in as_list(entry.get("model", [m.id for m in suite.models]))]
                for backend in backends:
                    for quant in as_list(entry["quantization"]):
                        if quant not in catalog[backend] and not any(quant in m.files for m in models):
                            raise where.error(
                                (section, index, "quantization"),
                                f"quantization {quant!r} is unknown for backend {backend}; "
                                f"allowed: {', '.join(catalog[backend])}",
                            )
