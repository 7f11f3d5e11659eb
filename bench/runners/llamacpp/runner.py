"""llama.cpp backend through llama-cpp-python's low-level API, measured the way llama-bench measures.

Tokens are fed as prepared llama_batch structs (no tokenization or sampling on the clock),
and llama_synchronize() runs before each clock stop.
"""

from __future__ import annotations

import ctypes
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.hardware import resolve_threads
from bench.runners.base import LoadInfo, SpeedEngine, context_size, release_freed_heap
from bench.runners.llamacpp.threadpool import ThreadPool
from bench.suite import Cell

KV_TYPE_TO_GGML = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30}
FLASH_ATTN_TO_LLAMA = {"auto": -1, "off": 0, "on": 1}
_MIB = re.compile(r"([\d.]+)\s*MiB")


def _llama() -> Any:
    import llama_cpp

    return llama_cpp


class _LogCapture:
    """Collects llama.cpp log lines so buffer sizes (KV, compute) can be read back as measured values.
    One per process (_log_capture): llama.cpp keeps the callback process-wide, so it must outlive any runner."""

    def __init__(self) -> None:
        llama_cpp = _llama()
        self.lines: list[str] = []

        @llama_cpp.llama_log_callback
        def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            self.lines.append(text.decode("utf-8", errors="replace"))

        self._callback = _callback  # keep a reference: ctypes callbacks die with their Python object
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


_CAPTURE: list[_LogCapture] = []


def _log_capture() -> _LogCapture:
    if not _CAPTURE:
        _CAPTURE.append(_LogCapture())
    _CAPTURE[0].take()  # a new runner starts with an empty log
    return _CAPTURE[0]


def _sum_mib(lines: list[str], marker: str) -> int | None:
    total = 0.0
    found = False
    for line in lines:
        if marker in line:
            match = _MIB.search(line)
            if match:
                total += float(match.group(1))
                found = True
    return int(total * 1024 * 1024) if found else None


class LlamaCppRunner(SpeedEngine):
    """The speed engine, and bench.quality's QualityModel (tokenize, logits, greedy generation)."""

    backend = "llamacpp"

    def __init__(self, model_path: Path, load_cell: Cell) -> None:
        self.model_path = model_path
        self.load_cell = load_cell
        self.model: Any = None
        self.ctx: Any = None
        self.ctx_key: tuple[Any, ...] | None = None
        self.n_ctx = 0
        self.n_batch = 512
        self._pos = 0
        self._ready_s: list[float] = []
        self._log = _log_capture()

    # ------------------------------------------------------------ load
    def load(self) -> LoadInfo:
        llama_cpp = _llama()
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = -1 if (self.load_cell.n_gpu_layers or 0) < 0 else int(self.load_cell.n_gpu_layers or 0)
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if self.load_cell.mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        params.use_extra_bufts = bool(self.load_cell.repack)
        if self.load_cell.device_kind == "cuda":
            params.main_gpu = self.load_cell.device_index
            params.split_mode = llama_cpp.LLAMA_SPLIT_MODE_NONE
        start = time.perf_counter()
        self.model = llama_cpp.llama_model_load_from_file(str(self.model_path).encode(), params)
        load_s = time.perf_counter() - start
        if not self.model:
            tail = " ".join(line.strip() for line in self._log.take()[-3:])
            raise BenchError(f"llama.cpp could not load {self.model_path}: {tail or 'no reason given'}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        log = self._log.take()
        desc = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self.model, desc, ctypes.sizeof(desc))
        return LoadInfo(
            load_s=load_s,
            n_params=int(llama_cpp.llama_model_n_params(self.model)),
            model_file_bytes=self.model_path.stat().st_size,
            extra={
                "model_weights_bytes": int(llama_cpp.llama_model_size(self.model)),
                "model_desc": desc.value.decode(errors="replace"),
                "model_buffers_bytes": _sum_mib(log, "model buffer size"),
            },
        )

    def n_vocab(self) -> int:
        return int(_llama().llama_vocab_n_tokens(self.vocab))

    def bos_token(self) -> int | None:
        llama_cpp = _llama()
        return int(llama_cpp.llama_vocab_bos(self.vocab)) if llama_cpp.llama_vocab_get_add_bos(self.vocab) else None

    # ------------------------------------------------------------ context
    def start_context(self, cell: Cell) -> dict[str, Any]:
        return self.open_context(context_size(cell), cell)

    def open_context(self, n_ctx: int, cell: Cell, logits_all: bool = False) -> dict[str, Any]:
        llama_cpp = _llama()
        threads = resolve_threads(cell.threads)
        n_seq = cell.parallel
        swa_full = bool(cell.setting("swa_full"))
        key = (
            n_ctx,
            threads,
            cell.n_batch,
            cell.n_ubatch,
            cell.flash_attn,
            cell.kv_cache_type,
            swa_full,
            logits_all,
            n_seq,
        )
        if key == self.ctx_key:
            return self._ctx_fields
        self._free_context()
        self._log.take()  # the freed context's own lines (~llama_context repeats its compute buffer size)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = max(min(cell.n_batch, n_ctx), n_seq)  # a decode step holds one token per sequence
        params.n_ubatch = min(cell.n_ubatch, params.n_batch)
        params.n_seq_max = n_seq
        params.kv_unified = True  # one KV buffer for every sequence, as llama-batched-bench (-kvu) measures
        params.swa_full = swa_full  # the knob's default (false) is llama-bench's, not llama_context_default_params'
        params.n_threads = threads
        params.n_threads_batch = threads
        params.flash_attn_type = FLASH_ATTN_TO_LLAMA[cell.flash_attn]
        kv_type = KV_TYPE_TO_GGML[cell.kv_cache_type]
        params.type_k = kv_type
        params.type_v = kv_type
        params.no_perf = False  # llama.cpp's own eval timers: the harness-overhead check reads them
        if logits_all:
            params.n_outputs_max = n_ctx  # quality needs logits at every position
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        log = self._log.take()
        if not self.ctx:
            tail = " ".join(line.strip() for line in log[-3:])
            raise BenchError(f"llama.cpp could not create a context of {n_ctx} tokens: {tail or 'out of memory?'}")
        self._pool = ThreadPool(llama_cpp, threads)
        self._pool.attach(self.ctx)
        self.n_ctx = n_ctx
        self.n_batch = params.n_batch
        self.ctx_key = key
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._ctx_fields = {
            "n_ctx": n_ctx,
            "threads_used": threads,
            "kv_cache_bytes": _sum_mib(log, "KV buffer size"),
            "compute_buffer_bytes": _sum_mib(log, "compute buffer size"),
        }
        return self._ctx_fields

    def _free_context(self) -> None:
        llama_cpp = _llama()
        if self.ctx:
            llama_cpp.llama_batch_free(self._batch)
            self._pool.detach(self.ctx)
            llama_cpp.llama_free(self.ctx)
            self._pool.close()
            self.ctx = None
            self.ctx_key = None
            release_freed_heap()

    def close(self) -> None:
        self._free_context()
        if self.model:
            _llama().llama_model_free(self.model)
            self.model = None

    def engine_seconds(self) -> tuple[float, float]:
        """llama.cpp's own prompt and generation eval time (it stops its clock in llama_synchronize)."""
        data = _llama().llama_perf_context(self.ctx)
        return data.t_p_eval_ms / 1000.0, data.t_eval_ms / 1000.0

    # ------------------------------------------------------------ timed primitives
    def _memory(self) -> Any:
        return _llama().llama_get_memory(self.ctx)

    def reset(self, depth_tokens: np.ndarray) -> None:
        _llama().llama_memory_clear(self._memory(), True)
        self._pos = 0
        if depth_tokens.shape[1]:
            self.prefill(depth_tokens)

    def truncate(self, n_keep: int) -> bool:
        ok = bool(_llama().llama_memory_seq_rm(self._memory(), -1, n_keep, -1))  # -1: every sequence
        if ok:
            self._pos = n_keep
        return ok

    def _fill_rows(self, tokens: np.ndarray, start_pos: int, first: int, count: int) -> None:
        """Put entries [first, first + count) of the flattened [sequences, n] tokens into the batch: sequence
        s's token i at position start_pos + i; logits for each sequence's last token."""
        batch = self._batch
        n = tokens.shape[1]
        for slot, flat in enumerate(range(first, first + count)):
            seq, i = divmod(flat, n)
            batch.token[slot] = int(tokens[seq, i])
            batch.pos[slot] = start_pos + i
            batch.n_seq_id[slot] = 1
            batch.seq_id[slot][0] = seq
            batch.logits[slot] = i == n - 1
        batch.n_tokens = count

    def _fill_batch(self, tokens: np.ndarray, start_pos: int, want_logits: bool | str) -> None:
        batch = self._batch
        n = len(tokens)
        for i in range(n):
            batch.token[i] = int(tokens[i])
            batch.pos[i] = start_pos + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = want_logits == "all" or (bool(want_logits) and i == n - 1)
        batch.n_tokens = n

    def _decode_batch(self) -> None:
        status = _llama().llama_decode(self.ctx, self._batch)
        if status != 0:
            raise BenchError(f"llama_decode failed with status {status} (KV cache full or out of memory?)")

    def prefill(self, tokens: np.ndarray) -> float:
        llama_cpp = _llama()
        total = tokens.size
        elapsed = 0.0
        done_s = []  # when each n_batch chunk of the flattened [sequences, n] prompts was done
        for first in range(0, total, self.n_batch):
            # Batches are filled off the clock; only llama_decode + synchronize are timed.
            self._fill_rows(tokens, self._pos, first, min(self.n_batch, total - first))
            start = time.perf_counter()
            self._decode_batch()
            llama_cpp.llama_synchronize(self.ctx)
            elapsed += time.perf_counter() - start
            done_s.append(elapsed)
        n = tokens.shape[1]
        # Sequence s's last prompt token is entry s*n + n - 1: its logits exist once that entry's chunk is done.
        self._ready_s = [done_s[(s * n + n - 1) // self.n_batch] for s in range(tokens.shape[0])] if n else []
        self._pos += n
        return elapsed

    def prefill_ready_s(self) -> list[float] | None:
        return self._ready_s or None

    def decode(self, tokens: np.ndarray) -> list[float]:
        llama_cpp = _llama()
        times = []
        for step in tokens:  # one token for every sequence
            self._fill_rows(step[:, None], self._pos, 0, len(step))
            start = time.perf_counter()
            self._decode_batch()
            llama_cpp.llama_synchronize(self.ctx)
            times.append(time.perf_counter() - start)
            self._pos += 1
        return times

    # ------------------------------------------------------------ quality support
    def tokenize(self, text: str, add_bos: bool = True) -> np.ndarray:
        llama_cpp = _llama()
        data = text.encode("utf-8")
        capacity = len(data) + 16
        buffer = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(self.vocab, data, len(data), buffer, capacity, add_bos, False)
        if count < 0:
            capacity = -count
            buffer = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(self.vocab, data, len(data), buffer, capacity, add_bos, False)
        return np.frombuffer(buffer, dtype=np.int32, count=count).copy()

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """Logits for every position of `tokens` as one fresh sequence: float32 [len(tokens), n_vocab]."""
        llama_cpp = _llama()
        self._check_fits(len(tokens))
        llama_cpp.llama_memory_clear(self._memory(), True)
        n_vocab = self.n_vocab()
        out = np.empty((len(tokens), n_vocab), dtype=np.float32)
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            self._fill_batch(chunk, start, "all")
            self._decode_batch()
            pointer = llama_cpp.llama_get_logits(self.ctx)
            out[start : start + len(chunk)] = np.ctypeslib.as_array(pointer, shape=(len(chunk), n_vocab))
        self._pos = len(tokens)
        return out

    def _check_fits(self, n_tokens: int) -> None:
        if not self.ctx:
            raise BenchError("no context: call prepare_logits() before logits()")
        if n_tokens > self.n_ctx:
            raise BenchError(f"{n_tokens} tokens do not fit the context of {self.n_ctx} tokens")

    def prepare_logits(self, n_ctx: int, cell: Cell) -> None:
        self.open_context(n_ctx, cell, logits_all=True)

    def detokenize(self, tokens: np.ndarray) -> str:
        llama_cpp = _llama()
        array = (llama_cpp.llama_token * max(1, len(tokens)))(*[int(t) for t in tokens])
        capacity = 64 + 32 * len(tokens)
        buffer = ctypes.create_string_buffer(capacity)
        count = llama_cpp.llama_detokenize(self.vocab, array, len(tokens), buffer, capacity, True, False)
        if count < 0:
            capacity = -count
            buffer = ctypes.create_string_buffer(capacity)
            count = llama_cpp.llama_detokenize(self.vocab, array, len(tokens), buffer, capacity, True, False)
        return buffer.raw[:count].decode("utf-8", errors="replace")

    def generate_greedy(self, tokens: np.ndarray, max_new_tokens: int) -> np.ndarray:
        """Greedy decoding on the KV cache (one step per new token); stops at an end-of-generation token."""
        llama_cpp = _llama()
        self._check_fits(len(tokens) + max_new_tokens)
        llama_cpp.llama_memory_clear(self._memory(), True)
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            self._fill_batch(chunk, start, start + len(chunk) == len(tokens))
            self._decode_batch()
        n_vocab = self.n_vocab()
        position = len(tokens)
        generated: list[int] = []
        while True:
            row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, -1), shape=(n_vocab,))
            token = int(np.argmax(row))
            if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                break
            generated.append(token)
            if len(generated) == max_new_tokens:
                break
            self._fill_batch(np.asarray([token]), position, True)
            self._decode_batch()
            position += 1
        self._pos = position
        return np.asarray(generated, dtype=np.int32)
