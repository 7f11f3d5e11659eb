#!/usr/bin/env python3
"""Print the CMAKE_ARGS to build llama-cpp-python for *this* machine's CPU.

Why not GGML_NATIVE=ON: on some VMs the CPU advertises AMX but executing AMX
instructions raises SIGILL, so a native build crashes at the first matrix
multiply. We build with GGML_NATIVE=OFF and enable exactly the x86 extensions
/proc/cpuinfo lists, leaving AMX off unless BENCH_ENABLE_AMX=1.
Standard library only: this runs before the package is installed.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

# cpuinfo flag -> ggml CMake option (ggml/CMakeLists.txt)
X86_FLAG_OPTIONS: dict[str, str] = {
    "avx": "GGML_AVX",
    "avx2": "GGML_AVX2",
    "fma": "GGML_FMA",
    "f16c": "GGML_F16C",
    "bmi2": "GGML_BMI2",
    "avx_vnni": "GGML_AVX_VNNI",
    "avx512f": "GGML_AVX512",
    "avx512vbmi": "GGML_AVX512_VBMI",
    "avx512_vnni": "GGML_AVX512_VNNI",
    "avx512_bf16": "GGML_AVX512_BF16",
}
AMX_FLAG_OPTIONS: dict[str, str] = {
    "amx_tile": "GGML_AMX_TILE",
    "amx_int8": "GGML_AMX_INT8",
    "amx_bf16": "GGML_AMX_BF16",
}


def cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(cpuinfo_path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def nvidia_gpu_present() -> bool:
    """A CUDA build takes long; only ask for one when a GPU answers and nvcc exists."""
    if shutil.which("nvcc") is None or shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def cmake_args(flags: set[str], machine: str, enable_amx: bool, cuda: bool) -> list[str]:
    args: list[str] = []
    if machine in ("x86_64", "amd64"):
        args.append("-DGGML_NATIVE=OFF")
        wanted = dict(X86_FLAG_OPTIONS)
        if enable_amx:
            wanted.update(AMX_FLAG_OPTIONS)
        for flag, option in wanted.items():
            args.append(f"-D{option}={'ON' if flag in flags else 'OFF'}")
    if cuda:
        args.append("-DGGML_CUDA=ON")
    return args


def main() -> int:
    if os.environ.get("CMAKE_ARGS"):
        print(os.environ["CMAKE_ARGS"])  # the user's explicit choice wins
        return 0
    args = cmake_args(
        cpu_flags(),
        platform.machine().lower(),
        enable_amx=os.environ.get("BENCH_ENABLE_AMX") == "1",
        cuda=os.environ.get("BENCH_LLAMA_CUDA", "auto") == "1"
        or (os.environ.get("BENCH_LLAMA_CUDA", "auto") == "auto" and nvidia_gpu_present()),
    )
    print(" ".join(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
