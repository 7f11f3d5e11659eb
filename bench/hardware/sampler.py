"""GpuSampler: peak VRAM, energy and average power of one NVIDIA GPU while a cell is measured."""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType
from typing import Any, Self

from bench.hardware import nvml
from bench.hardware.energy import NVML_POWER_SOURCE, NVML_SOURCE
from bench.hardware.probe import attempt

NVML_UPDATE_S = 0.1  # how often NVML's energy counter and power readings change (about)
MIN_ENERGY_WINDOW_S = 10 * NVML_UPDATE_S  # a shorter energy window is within a few updates of the counter


class GpuSampler:
    """Context manager sampling one NVIDIA GPU through NVML in a background thread every `interval_s`.

    Peak VRAM: NVML's per-process figure for os.getpid() when NVML attributes memory to us; else (inside a
    PID namespace, i.e. most Docker GPU runners) the peak of device memory used minus `baseline_used_bytes`.
    Take that baseline with nvml.vram_used_bytes() BEFORE the model is loaded, so weights and KV cache count;
    without one, the baseline is device memory used on entering, which leaves out whatever was loaded before.
    Energy is in joules since mark() (the GPU's energy counter; else power samples integrated). Each read of
    energy_j_since_mark() closes a window (one repetition's decode), and the average power is over every
    window closed (every repetition), not the last one alone. The energy counter and power readings update
    every ~100 ms (NVML_UPDATE_S): a window shorter than MIN_ENERGY_WINDOW_S is coarse (measure_cell's rows
    say so in `warnings`).
    With NVML absent, kind != "cuda" or no such GPU it is a no-op whose results are None.
    """

    def __init__(self, kind: str, index: int, interval_s: float = 0.05, baseline_used_bytes: int | None = None) -> None:
        self.kind = kind
        self.index = index
        self.interval_s = interval_s
        self.baseline_used_bytes = baseline_used_bytes
        self.peak_vram_bytes: int | None = None
        self._handle: Any = None  # set while sampling
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak_own: int | None = None  # from NVML's per-process list, once we appear in it
        self._peak_delta = 0  # device used minus baseline: the fallback
        self._has_energy_counter = False
        self.source = ""  # what the energy figures come from (bench.hardware.energy); "" when there are none
        self._mark_t = 0.0
        self._mark_mj: int | None = None
        self._joules = 0.0  # power integrated since mark (fallback when there is no energy counter)
        self._last_power: tuple[float, float] | None = None  # (time, watts) of the latest sample
        self._final: tuple[float | None, float] | None = None  # (joules, seconds) frozen at exit
        self._windows: list[tuple[float, float]] = []  # (joules, seconds) of each window energy_j_since_mark closed

    @classmethod
    def before_load(cls, kind: str, index: int, interval_s: float = 0.05) -> Self:
        """A sampler (not yet entered) whose baseline is the device memory used now, before loading."""
        return cls(kind, index, interval_s, baseline_used_bytes=nvml.vram_used_bytes(kind, index))

    def __enter__(self) -> Self:
        if self.kind != "cuda" or nvml.start():
            return self
        handle = nvml.handle_for(self.kind, self.index)
        if handle is None:
            nvml.shutdown()
            return self
        if self.baseline_used_bytes is None:
            self.baseline_used_bytes = nvml.memory_used(handle) or 0
        self._has_energy_counter = nvml.energy_mj(handle) is not None
        self._handle = handle
        self.source = NVML_SOURCE if self._has_energy_counter else NVML_POWER_SOURCE
        self._sample()
        self.mark()
        self._thread = threading.Thread(target=self._run, name=f"GpuSampler-cuda:{self.index}", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self._final = (self._energy_now(), time.perf_counter() - self._mark_t)
        self._handle = None
        nvml.shutdown()

    def mark(self) -> None:
        """Start of the measured window: energy and average power count from here."""
        if self._handle is None:
            return
        mj = nvml.energy_mj(self._handle) if self._has_energy_counter else None
        with self._lock:
            self._mark_t = time.perf_counter()
            self._mark_mj = mj
            self._joules = 0.0
            if self._last_power is not None:  # integrate from the mark on, at the last known power
                self._last_power = (self._mark_t, self._last_power[1])

    def energy_j_since_mark(self) -> float | None:
        if self._final is not None:
            return self._final[0]
        if self._handle is None:
            return None
        joules = self._energy_now()
        if joules is not None:
            self._windows.append((joules, time.perf_counter() - self._mark_t))
        return joules

    @property
    def avg_power_w(self) -> float | None:
        """Watts over every window energy_j_since_mark() closed; without one, over the window since mark()."""
        if self._windows:
            seconds = sum(s for _, s in self._windows)
            return sum(j for j, _ in self._windows) / seconds if seconds > 0 else None
        if self._final is not None:
            joules, seconds = self._final
        elif self._handle is not None:
            joules, seconds = self._energy_now(), time.perf_counter() - self._mark_t
        else:
            return None
        return None if joules is None or seconds <= 0 else joules / seconds

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            attempt(self._sample)  # one failed read must not end the sampling

    def _sample(self) -> None:
        handle = self._handle
        own = self._own_memory(handle)
        used = nvml.memory_used(handle)
        watts = None if self._has_energy_counter else nvml.power_w(handle)
        now = time.perf_counter()
        with self._lock:
            if own is not None:
                self._peak_own = max(self._peak_own or 0, own)
            if used is not None:
                self._peak_delta = max(self._peak_delta, used - (self.baseline_used_bytes or 0))
            if watts is not None:
                if self._last_power is not None:  # trapezoid between consecutive samples
                    then, before = self._last_power
                    self._joules += (now - then) * (before + watts) / 2
                self._last_power = (now, watts)
            self.peak_vram_bytes = self._peak_own if self._peak_own is not None else self._peak_delta

    @staticmethod
    def _own_memory(handle: Any) -> int | None:
        for proc in nvml.compute_processes(handle) or []:
            if proc.pid == os.getpid() and proc.used_bytes is not None:
                return proc.used_bytes
        return None

    def _energy_now(self) -> float | None:
        if self._has_energy_counter:
            mj = nvml.energy_mj(self._handle)
            return None if mj is None or self._mark_mj is None else (mj - self._mark_mj) / 1000.0
        with self._lock:
            if self._last_power is None:
                return None
            then, watts = self._last_power
            return self._joules + (time.perf_counter() - then) * watts  # plus the stretch since the last sample
