"""Model references -> local files.

References: a local path; `package:<python-package>/<file>` for a file shipped inside an
installed package (or assembled by the package's `assemble()` helper); `hf://<org>/<repo>/<file>`
(optionally `@<revision>`) fetched through huggingface_hub into its cache.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError, ModelUnavailable

if TYPE_CHECKING:
    from bench.suite import ModelSpec


def cache_dir() -> Path:
    """bench's own cache (assembled and derived models). BENCH_CACHE_DIR overrides it."""
    root = os.environ.get("BENCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "bench"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class ResolvedModel:
    reference: str
    path: Path
    derived_from: str = ""
    weights: str = "real"  # or "synthetic": the model's shape with random values (bench.models.weights)
    weights_shape: str = ""  # the synthetic shape: a known name or a config.json path
    build_seconds: float | None = None  # derived from its source just now, in this many seconds (None: cached)


def resolve(reference: str) -> ResolvedModel:
    """Turn a reference into a readable local file, or raise ModelUnavailable saying how to supply it."""
    if reference.startswith("package:"):
        path = _resolve_package(reference)
    elif reference.startswith("hf://"):
        path = _resolve_hf_repo(reference) if _names_hf_repo(reference) else _resolve_hf(reference)
    else:
        path = Path(reference).expanduser()
        if not path.exists():
            raise ModelUnavailable(f"model file not found: {path}")
    return ResolvedModel(reference=reference, path=path)


def check_reference(reference: str) -> None:
    """BenchError when a reference can never name a model file ('..', an absolute path inside a package, a
    malformed hf:// reference); checked without touching the disk or the network."""
    if reference.startswith("package:"):
        _package_parts(reference)
    elif reference.startswith("hf://"):
        (_hf_repo_parts if _names_hf_repo(reference) else parse_hf_reference)(reference)


def _package_parts(reference: str) -> tuple[str, str]:
    """package:<python-package>/<file> -> (package, file)."""
    package, sep, filename = reference.removeprefix("package:").partition("/")
    if not sep or not package or not filename:
        raise BenchError(f"bad model reference {reference!r}: expected package:<python-package>/<file>")
    if ".." in Path(filename).parts or Path(filename).is_absolute():
        raise BenchError(f"bad model reference {reference!r}: the file must lie inside the package")
    return package, filename


def _resolve_package(reference: str) -> Path:
    package, filename = _package_parts(reference)
    module_name = package.replace("-", "_")
    if importlib.util.find_spec(module_name) is None:
        raise ModelUnavailable(
            f"model package {package!r} is not installed (reference {reference})",
            hint=f"pip install {package.replace('_', '-')}  (or: pip install -e '.[models]')",
        )
    module = importlib.import_module(module_name)
    package_dir = Path(module.__file__ or "").parent
    shipped = package_dir / filename
    if shipped.exists():
        return shipped
    assemble = getattr(module, "assemble", None)
    if callable(assemble):
        # Packages that split a model across parts ship an assemble() that writes the whole file, in place: the
        # lock keeps a second process sharing the cache (another shell, a test worker) from writing it too, or
        # reading it half written.
        from filelock import FileLock

        target = cache_dir() / "assembled" / module_name / Path(filename).name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(target) + ".lock"):
                return Path(assemble(target))
        except Exception as exc:  # the package's own error: report it as unavailable, don't crash the run
            raise ModelUnavailable(f"{reference}: {module_name}.assemble() failed: {exc}") from None
    raise ModelUnavailable(f"{reference}: package {module_name} has no file {filename!r}")


def parse_hf_reference(reference: str) -> tuple[str, str, str | None]:
    """hf://org/repo/path/in/repo.gguf[@revision] -> (repo_id, filename, revision)."""
    spec = reference.removeprefix("hf://")
    revision = None
    if "@" in spec:
        spec, revision = spec.rsplit("@", 1)
    parts = spec.split("/")
    if len(parts) < 3 or not all(parts):
        raise BenchError(f"bad model reference {reference!r}: expected hf://<org>/<repo>/<file>[@revision]")
    filename = "/".join(parts[2:])
    if spec.startswith("/") or ".." in parts or "\\" in spec:
        raise BenchError(f"bad model reference {reference!r}: '..', absolute paths and backslashes are not allowed")
    return f"{parts[0]}/{parts[1]}", filename, revision


_HUB_STATE = {"unreachable": False}  # per process: set once the hub failed to answer


def _hf_offline() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _resolve_hf(reference: str) -> Path:
    repo_id, filename, revision = parse_hf_reference(reference)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise ModelUnavailable(f"{reference}: huggingface_hub is not installed ({exc})") from None
    how = (
        f"download {filename} from huggingface.co/{repo_id} elsewhere and put its local path in the suite "
        f"(models[].source or models[].files), or pre-fill the Hugging Face cache "
        f"(huggingface-cli download {repo_id} {filename}) and set HF_HUB_OFFLINE=1"
    )
    return _from_hub(
        reference,
        "file",
        how,
        lambda cache_only: hf_hub_download(
            repo_id=repo_id, filename=filename, revision=revision, local_files_only=cache_only
        ),
    )


def _from_hub(reference: str, what: str, how: str, fetch: Callable[[bool], str]) -> Path:
    """Run a huggingface_hub download, turning offline/missing/network failures into ModelUnavailable."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = _hf_offline()
    try:
        # After one failed connection, later references look in the cache only: each retry costs ~20 s.
        return Path(fetch(offline or _HUB_STATE["unreachable"]))
    except LocalEntryNotFoundError:
        if offline:
            why = f"HF_HUB_OFFLINE is set and the {what} is not in the local Hugging Face cache"
        else:
            _HUB_STATE["unreachable"] = True
            why = "not in the local Hugging Face cache and the hub is unreachable"
        raise ModelUnavailable(f"{reference}: {why}", hint=how) from None
    except Exception as exc:  # network errors, 401/404 from the hub, ...
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelUnavailable(
            f"{reference}: cannot download the {what} from the Hugging Face hub: {type(exc).__name__}: {first_line}",
            hint=how,
        ) from None


def _names_hf_repo(reference: str) -> bool:
    """hf://org/repo[@revision] (a whole repository, as the torch backend loads it), not one file in it."""
    return len(reference.removeprefix("hf://").rsplit("@", 1)[0].strip("/").split("/")) == 2


# What the torch backend needs from a repository: config, tokenizer and safetensors weights (never pickles).
HF_REPO_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]


def _hf_repo_parts(reference: str) -> tuple[str, str]:
    """hf://org/repo[@revision] -> (repo_id, revision or '')."""
    repo_id, _, revision = reference.removeprefix("hf://").partition("@")
    if ".." in repo_id or "\\" in repo_id or not all(repo_id.split("/")):
        raise BenchError(f"bad model reference {reference!r}: expected hf://<org>/<repo>[@revision]")
    return repo_id, revision


def _resolve_hf_repo(reference: str) -> Path:
    repo_id, revision = _hf_repo_parts(reference)
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelUnavailable(f"{reference}: huggingface_hub is not installed ({exc})") from None
    how = (
        f"download huggingface.co/{repo_id} elsewhere and put the local folder in the suite, or pre-fill the "
        f"Hugging Face cache (huggingface-cli download {repo_id}) and set HF_HUB_OFFLINE=1"
    )
    return _from_hub(
        reference,
        "repository",
        how,
        lambda cache_only: snapshot_download(
            repo_id=repo_id, revision=revision or None, allow_patterns=HF_REPO_PATTERNS, local_files_only=cache_only
        ),
    )


def local_model_file(reference: str) -> Path | None:
    """The file a reference names if it is on this machine already: never downloads (for planning)."""
    if reference.startswith("hf://"):
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        repo_id, filename, revision = parse_hf_reference(reference)
        cached = try_to_load_from_cache(repo_id, filename, revision=revision)
        return Path(cached) if isinstance(cached, str) else None
    try:
        path = resolve(reference).path  # local paths and installed packages
    except BenchError:
        return None
    return path if path.is_file() else None


def cell_model_reference(model: ModelSpec, quantization: str) -> str:
    """Which reference holds this model at this quantization (before any derivation)."""
    if quantization in model.files:
        return model.files[quantization]
    if model.source is None:
        raise ModelUnavailable(
            f"model {model.id!r} has no file for quantization {quantization!r}; "
            f"its files: {', '.join(model.files) or 'none'}"
        )
    return model.source
