"""GGUF files: a fast header reader (tensors and metadata, no tensor data), checks, and the row fields
read from the header."""

from __future__ import annotations

import functools
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GgufTensor:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length
    type_name: str  # ggml type, e.g. Q4_K, F32
    offset: int  # from the start of the file
    n_elements: int
    n_bytes: int


@dataclass(frozen=True)
class GgufHeader:
    """A GGUF file's metadata and tensor table. Arrays of strings (the vocabulary) are kept as their length."""

    version: int
    fields: dict[str, object]
    tensors: tuple[GgufTensor, ...]
    data_offset: int  # where tensor data starts: everything before it is header (read through the mapping)
    file_size: int

    def get(self, key: str) -> object | None:
        return self.fields.get(key)


class _GgufCursor:
    """Walks a GGUF header with struct; string arrays are skipped, not materialised (gguf's GGUFReader makes a
    numpy view per vocabulary entry: seconds per file, tens of seconds for 256K-token vocabularies)."""

    SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    STRING, ARRAY = 8, 9
    SMALL_ARRAY = 65536  # numeric arrays longer than this are kept as their length too

    def __init__(self, data: memoryview, order: str) -> None:
        self.data, self.order, self.pos = data, order, 0

    def scalar(self, code: str) -> Any:
        size = struct.calcsize(code)
        if self.pos + size > len(self.data):
            raise ValueError(f"header ends at byte {len(self.data)} in the middle of a value")
        (value,) = struct.unpack_from(self.order + code, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        length = self.scalar("Q")
        if self.pos + length > len(self.data):
            raise ValueError(f"a string of {length} bytes at byte {self.pos} runs past the end of the file")
        text = bytes(self.data[self.pos : self.pos + length]).decode("utf-8", errors="replace")
        self.pos += length
        return text

    def value(self, value_type: int) -> object:
        if value_type == self.STRING:
            return self.string()
        if value_type in self.SCALARS:
            return self.scalar(self.SCALARS[value_type])
        if value_type != self.ARRAY:
            raise ValueError(f"unknown metadata value type {value_type} at byte {self.pos}")
        element_type, count = self.scalar("I"), self.scalar("Q")
        if count > len(self.data):
            raise ValueError(f"an array of {count} entries cannot fit in a file of {len(self.data)} bytes")
        if element_type in self.SCALARS and count <= self.SMALL_ARRAY:
            code = f"{count}{self.SCALARS[element_type]}"
            if self.pos + struct.calcsize(code) > len(self.data):
                raise ValueError(f"an array at byte {self.pos} runs past the end of the file")
            values = list(struct.unpack_from(self.order + code, self.data, self.pos))
            self.pos += struct.calcsize(code)
            return values
        if element_type in self.SCALARS:
            self.pos += count * struct.calcsize(self.SCALARS[element_type])
        elif element_type == self.STRING:
            for _ in range(count):
                length = self.scalar("Q")  # (read first: `pos += scalar()` would add to the old position)
                self.pos += length
        else:
            for _ in range(count):
                self.value(element_type)
        if self.pos > len(self.data):
            raise ValueError("an array runs past the end of the file")
        return count


def _parse_gguf(path: Path) -> GgufHeader:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    size = path.stat().st_size
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        data = memoryview(mapped)
        try:
            if bytes(data[:4]) != GGUF_MAGIC:
                raise ValueError(f"magic {bytes(data[:4])!r}, expected {GGUF_MAGIC!r}")
            order = "<" if struct.unpack_from("<I", data, 4)[0] < 65536 else ">"  # big-endian files exist
            cursor = _GgufCursor(data, order)
            cursor.pos = 4
            version = cursor.scalar("I")
            if version < 2:
                raise ValueError(f"GGUF version {version} is too old (llama.cpp reads 2 and 3)")
            n_tensors, n_fields = cursor.scalar("Q"), cursor.scalar("Q")
            if n_tensors > size or n_fields > size:
                raise ValueError(f"{n_tensors} tensors and {n_fields} fields cannot fit in {size} bytes")
            fields: dict[str, object] = {}
            for _ in range(n_fields):
                key = cursor.string()
                fields[key] = cursor.value(cursor.scalar("I"))
            infos = []
            for _ in range(n_tensors):
                name = cursor.string()
                n_dims = cursor.scalar("I")
                if n_dims > 8:
                    raise ValueError(f"tensor {name!r} claims {n_dims} dimensions")
                shape = tuple(int(cursor.scalar("Q")) for _ in range(n_dims))
                infos.append((name, shape, cursor.scalar("I"), cursor.scalar("Q")))
            alignment = int(fields.get("general.alignment") or 32)  # type: ignore[call-overload]
            data_offset = -(-cursor.pos // alignment) * alignment
            tensors = []
            for name, shape, type_id, offset in infos:
                try:
                    quant = GGMLQuantizationType(type_id)
                except ValueError:
                    raise ValueError(
                        f"tensor {name!r} has ggml type {type_id}, unknown to the installed gguf "
                        "package (pip install -U gguf)"
                    ) from None
                block, block_bytes = GGML_QUANT_SIZES[quant]
                n_elements = math.prod(shape)
                tensors.append(
                    GgufTensor(
                        name, shape, quant.name, data_offset + offset, n_elements, n_elements // block * block_bytes
                    )
                )
        finally:
            data.release()
    return GgufHeader(version, fields, tuple(tensors), data_offset, size)


@functools.lru_cache(maxsize=32)
def _read_gguf_cached(path: str, size: int, mtime_ns: int) -> GgufHeader:
    return _parse_gguf(Path(path))


def read_gguf_header(path: Path) -> GgufHeader:
    """The GGUF header of a file (cached per file version); BenchError when it is not a readable GGUF."""
    try:
        stat = path.stat()
        if stat.st_size < 24:
            with path.open("rb") as handle:
                magic = handle.read(4)
            if magic != GGUF_MAGIC:
                raise BenchError(f"{path} is not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
            raise BenchError(f"{path}: truncated GGUF: {stat.st_size} bytes cannot hold a header")
        return _read_gguf_cached(str(path), stat.st_size, stat.st_mtime_ns)
    except BenchError:
        raise
    except OSError as exc:
        raise BenchError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # a malformed header: say so instead of crashing later inside llama.cpp
        if str(exc).startswith("magic "):
            raise BenchError(f"{path} is not a GGUF file ({exc})") from None
        raise BenchError(f"{path}: unreadable GGUF header ({exc}); is the file truncated or corrupt?") from None


def check_gguf(path: Path) -> None:
    """Cheap sanity check before llama.cpp sees the file: a bad file must be an error, not a crash."""
    header = read_gguf_header(path)
    end = max((t.offset + t.n_bytes for t in header.tensors), default=header.data_offset)
    if end > header.file_size:
        raise BenchError(f"{path}: truncated GGUF: tensors need {end} bytes, the file has {header.file_size}")


def is_valid_gguf(path: Path) -> bool:
    """A whole GGUF file is there (a cached build is reused only then)."""
    if not path.is_file():
        return False
    try:
        check_gguf(path)
    except BenchError:
        return False
    return True


def gguf_metadata(path: Path) -> dict[str, object]:
    """Row fields from a GGUF header: architecture, shape, trained context, file type, bits per weight."""
    header = read_gguf_header(path)
    arch = str(header.get("general.architecture") or "")

    def arch_int(name: str) -> int | None:
        value = header.get(f"{arch}.{name}")
        if isinstance(value, list):  # per-layer values (e.g. head counts that vary by layer)
            value = max(value) if value else None
        return int(value) if isinstance(value, int | float) else None

    n_heads = arch_int("attention.head_count")
    n_embd = arch_int("embedding_length")
    head_dim = arch_int("attention.key_length") or (n_embd // n_heads if n_embd and n_heads else None)
    n_params = sum(t.n_elements for t in header.tensors)
    weight_bytes = sum(t.n_bytes for t in header.tensors)
    file_type = file_type_name(header.get("general.file_type"))
    names = {t.name: t for t in header.tensors}
    embeddings = names.get("token_embd.weight")
    return {
        "arch": arch,
        "n_layers": arch_int("block_count"),
        "n_heads": n_heads,
        "n_kv_heads": arch_int("attention.head_count_kv") or n_heads,
        "head_dim": head_dim,
        "n_ctx_train": arch_int("context_length"),
        "file_type": file_type,
        "bits_per_weight": 8.0 * weight_bytes / n_params if n_params else None,
        # Decode reads one row of the embedding table per token, unless the output head is that table.
        "token_embd_bytes": embeddings.n_bytes if embeddings else None,
        "tied_embeddings": "output.weight" not in names if embeddings else None,
        "n_ctx_rope_scaled": _rope_scaled_context(header, arch),
    }


def _rope_scaled_context(header: GgufHeader, arch: str) -> int | None:
    """factor × original context when the GGUF declares RoPE scaling with its original context length.

    Keys as llama.cpp reads them: {arch}.rope.scaling.type (absent: linear), .factor and
    .original_context_length. Without the original length, nothing says the trained context is the
    unscaled one (a converter may have written the extended length there already), so nothing is multiplied.
    """
    kind = str(header.get(f"{arch}.rope.scaling.type") or "linear")
    factor = header.get(f"{arch}.rope.scaling.factor")
    original = header.get(f"{arch}.rope.scaling.original_context_length")
    if kind == "none" or not isinstance(factor, int | float) or factor <= 1 or not isinstance(original, int):
        return None
    return int(factor * original)


def file_type_name(file_type_id: object) -> str:
    """general.file_type -> the quantization name bench uses ('Q4_K_M', 'F16', 'F32'); '' when absent."""
    from gguf import LlamaFileType

    if file_type_id is None:
        return ""
    try:
        name = LlamaFileType(int(file_type_id)).name  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return str(file_type_id)
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")
