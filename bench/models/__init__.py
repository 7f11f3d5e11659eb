"""Models: references (path, package:, hf://) -> local files, the GGUF header reader, known shapes, synthetic
weights and the per-cell choice between real and synthetic weights. The names below are bench.models' face."""

from bench.models.gguf import GgufHeader, GgufTensor, check_gguf, file_type_name, gguf_metadata, read_gguf_header
from bench.models.references import (
    ResolvedModel,
    cache_dir,
    cell_model_reference,
    check_reference,
    local_model_file,
    parse_hf_reference,
    resolve,
)

__all__ = [
    "GgufHeader",
    "GgufTensor",
    "ResolvedModel",
    "cache_dir",
    "cell_model_reference",
    "check_gguf",
    "check_reference",
    "file_type_name",
    "gguf_metadata",
    "local_model_file",
    "parse_hf_reference",
    "read_gguf_header",
    "resolve",
]
