"""The GGUF quantization vocabulary: the types bench knows by name, the type a file name announces, and the bits
per weight of llama.cpp's quantization mixes (for pricing a model the planner has no file of).

A leaf of the package: spec.py, quantize.py, memory_plan.py and shapes.py import it; it imports none of them.
"""

from __future__ import annotations

import re
from pathlib import Path

# Whole-file average bits per weight of llama.cpp's quantization mixes (higher-precision output and
# embedding tensors included): from the sizes `llama-quantize --help` lists for Llama-3-8B (8.03 B
# parameters), and the nominal rate for the IQ/TQ types it lists by bpw.
BITS_PER_WEIGHT: dict[str, float] = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.57,
    "Q5_K_M": 5.70,
    "Q5_K_S": 5.57,
    "Q5_1": 6.04,
    "Q5_0": 5.57,
    "Q4_K_M": 4.90,
    "Q4_K_S": 4.67,
    "Q4_1": 5.11,
    "Q4_0": 4.64,
    "IQ4_NL": 4.50,
    "IQ4_XS": 4.25,
    "Q3_K_L": 4.31,
    "Q3_K_M": 4.00,
    "Q3_K_S": 3.65,
    "IQ3_M": 3.66,
    "IQ3_S": 3.44,
    "IQ3_XS": 3.30,
    "IQ3_XXS": 3.06,
    "Q2_K": 3.17,
    "Q2_K_S": 3.17,
    "IQ2_M": 2.70,
    "IQ2_S": 2.50,
    "IQ2_XS": 2.31,
    "IQ2_XXS": 2.06,
    "IQ1_M": 1.75,
    "IQ1_S": 1.56,
    "TQ1_0": 1.69,
    "TQ2_0": 2.06,
}
# llama-quantize stores the output head (a tied model's token_embd) as Q6_K for every type below Q8_0, and as
# Q5_K for the 1-2 bit IQ types (llama_tensor_get_type); the rest takes the type's body rate. The table's
# whole-file rates include Llama-3-8B's head (128256 x 4096 of 8.03 B parameters), which is taken out here,
# so a model whose head is a larger share (Qwen2's 151936-token vocabulary: 13 % of the 1.5B) is priced right.
_LLAMA3_8B_PARAMS, _LLAMA3_8B_HEAD_PARAMS = 8_030_261_248, 128_256 * 4_096
_Q6_K_BITS, _Q5_K_BITS = 6.5625, 5.5
_HEAD_Q5_K_TYPES = frozenset({"IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S", "TQ1_0", "TQ2_0"})


def head_bits(quant: str) -> float:
    """Bits per weight of the output head in llama-quantize's mix for `quant`."""
    if quant in _HEAD_Q5_K_TYPES:
        return _Q5_K_BITS
    return _Q6_K_BITS if BITS_PER_WEIGHT[quant] < 8 else BITS_PER_WEIGHT[quant]


def body_bits(quant: str) -> float:
    """Bits per weight of everything but the output head: the whole-file rate without Llama-3-8B's head."""
    whole, head = BITS_PER_WEIGHT[quant], head_bits(quant)
    return (whole * _LLAMA3_8B_PARAMS - head * _LLAMA3_8B_HEAD_PARAMS) / (_LLAMA3_8B_PARAMS - _LLAMA3_8B_HEAD_PARAMS)


# GGUF quantization types bench knows by name (llama.cpp's `llama-quantize --help`), highest precision first.
GGUF_QUANT_TYPES: tuple[str, ...] = tuple(BITS_PER_WEIGHT)


def quant_type_from_name(reference: str) -> str:
    """The quantization a file name announces ('...-Q4_K_M.gguf' -> 'Q4_K_M'), or '' when it names none."""
    stem = Path(reference.rsplit("@", 1)[0]).name.upper()
    found = [t for t in GGUF_QUANT_TYPES if re.search(rf"(?<![A-Z0-9]){t}(?![A-Z0-9_])", stem)]
    return max(found, key=len) if found else ""  # Q4_K_M, not Q4_K... nor Q4
