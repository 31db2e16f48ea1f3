"""Run a ``CudaProgram`` in the CPU emulator: the generated CUDA C, compiled with g++.

    ex = EmuExecutor(prog)                       # builds (or reuses) the emulator library
    outs = ex.run([x], order="shuffled", seed=3)

Memory is host memory laid out as on the GPU: one arena (``plan_memory`` offsets), the
constants, and the caller's input/output arrays. With ``sanitize=True`` (an AddressSanitizer
build, in a process started with ``emulator.asan_env()``) every buffer gets its own exact-size
allocation instead, so ASan's redzones catch any read or write past a buffer's end.
"""
from __future__ import annotations

import ctypes

import numpy as np

from irgraph.errors import ExecutionError
from irgraph.graph import Value

from ..cpu.runtime import ALIGN, _nbytes, _static
from . import emulator
from .program import CudaProgram, FallbackStep, LaunchStep


class EmuExecutor:
    def __init__(self, program: CudaProgram, module=None, sanitize: bool | None = None):
        self.program = program
        self.sanitize = emulator.sanitize_default() if sanitize is None else bool(sanitize)
        if self.sanitize and any(isinstance(p, FallbackStep) for p in program.plan):
            raise ExecutionError("the sanitized emulator cannot run numpy fallback nodes")
        self.module = module or emulator.build(program.source, program.kernel_params, self.sanitize)
        n = program.arena_bytes
        self._arena_raw = np.zeros(n + ALIGN, np.uint8)
        off = (-self._arena_raw.ctypes.data) % ALIGN
        program.arena = self._arena_raw[off:off + n]   # fallbacks read and write it too
        self._consts = [np.ascontiguousarray(c) for c in program.consts]
        self._san: dict = {}
        self._san_consts: list = []
        if self.sanitize:
            for c in self._consts:
                p = self.module.alloc(c.nbytes)
                ctypes.memmove(p, c.ctypes.data, c.nbytes)
                self._san_consts.append(p)

    def close(self) -> None:
        for p in list(self._san.values()) + self._san_consts:
            self.module.free(p)
        self._san.clear()
        self._san_consts = []

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- memory ---------------------------------------------------------------------------------
    def _ptr(self, ref, nbytes: int, ins, outs) -> int:
        kind, i = ref
        if not self.sanitize:
            if kind == "input":
                return ins[i].ctypes.data
            if kind == "output":
                return outs[i].ctypes.data
            if kind == "const":
                return self._consts[i].ctypes.data
            return self.program.arena.ctypes.data + i if self.program.arena_bytes else self._arena_raw.ctypes.data
        if kind == "const":
            return self._san_consts[i]
        key = (kind, i, nbytes)
        p = self._san.get(key)
        if p is None:
            p = self.module.alloc(nbytes)
            self._san[key] = p
            src = ins[i] if kind == "input" else None
            if src is not None:
                ctypes.memmove(p, src.ctypes.data, min(nbytes, src.nbytes))
        return p

    # ---- running --------------------------------------------------------------------------------
    def run(self, inputs, order: str = "forward", seed: int = 0) -> list:
        prog = self.program
        g = prog.graph
        ins = [np.ascontiguousarray(a) for a in inputs]
        outs = [np.empty(v.type.shape, v.dtype.np) if _static(v) else None for v in g.outputs]
        py: dict = {}
        with prog._lock:
            if self.sanitize:
                self._san_inputs(ins)
            for step in prog.plan:
                if isinstance(step, LaunchStep):
                    la = step.launch
                    ptrs = [self._ptr(r, b.nbytes, ins, outs) for r, b in zip(step.refs, la.buffers)]
                    self.module.launch(la.fn, la.grid, la.block, ptrs, order, seed)
                else:
                    prog._run_fallback(step.step.node, ins, outs, py)
            result = []
            for j, v in enumerate(g.outputs):
                result.append(self._result(j, v, ins, outs, py))
        return result

    def _san_inputs(self, ins) -> None:
        for (kind, i, nbytes), p in self._san.items():
            if kind == "input":
                ctypes.memmove(p, ins[i].ctypes.data, min(nbytes, ins[i].nbytes))

    def _result(self, j: int, v: Value, ins, outs, py) -> np.ndarray:
        prog = self.program
        loc = prog._where(v)
        if not self.sanitize:
            if loc.kind == "output" and loc.index == j:
                return outs[j]
            return np.array(prog._array(v, ins, outs, py), copy=True)
        if loc.kind == "const":
            return np.array(prog._array(v, ins, outs, py), copy=True)
        if loc.kind == "input":
            return np.array(ins[loc.index].reshape(v.type.shape), copy=True)
        nb = _nbytes(v)
        key = (loc.kind, loc.index, nb)
        p = self._san.get(key)
        out = np.empty(v.type.shape, v.dtype.np)
        if p is None:
            raise ExecutionError(f"internal: output {v.name!r} was never written")
        ctypes.memmove(out.ctypes.data, p, nb)
        return out
