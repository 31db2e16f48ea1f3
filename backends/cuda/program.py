"""A static-shaped graph compiled to CUDA C: kernels, the launch plan, one arena.

    prog = CudaProgram(graph, prefix="m_")     # graph: every shape static
    prog.source        # CUDA C of every kernel (the prelude is added when compiling)
    prog.plan          # [LaunchStep | FallbackStep] in order

Steps, constant folding, views and arena placement are the CPU backend's (``cpu.runtime.Program``:
the same lowering, the same ``plan_memory`` offsets); what differs is code generation: each
kernel becomes CUDA functions (``printer.py``) lowered with the CUDA templates (``gemm.py``),
and each launch names its buffers as (input | output | const | arena, index or byte offset).
Runtimes (``runtime_emu.py``, ``runtime_pycuda.py``) bind those to memory.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

import numpy as np

from irgraph.errors import CompileError
from irgraph.graph import Graph

from ..cpu.runtime import ALIGN, CpuReport, Program, _align
from ..kernel_ir import LoweringError
from .gemm import CudaTemplates
from .printer import KernelSource, Launch, c_name
from .scalar_cuda import mem_type


@dataclass
class LaunchStep:
    launch: Launch
    refs: list                 # per buffer: (kind, index) with kind input|output|const|arena
    kernel: str                # the kernel (graph node) it belongs to


@dataclass
class FallbackStep:
    step: object               # cpu.runtime.Step of kind "fallback"


@dataclass
class CudaReport(CpuReport):
    launches: int = 0
    stages: dict = field(default_factory=dict)   # schedule kind -> count

    def headline(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.stages.items()))
        return (f"cuda: {len(self.kernels)} kernels in {self.launches} launches ({kinds}), "
                f"{len(self.fallback)} fallback nodes, {self.folded} folded, {self.aliases} views; "
                f"arena {self.arena_bytes} bytes ({self.memory_plan} plan)")


class CudaProgram(Program):
    """Lowered, placed and printed; nothing compiled (see ``nvcc.py`` / ``emulator.py``)."""

    def __init__(self, graph: Graph, *, fallback: bool = False, prefix: str = "irg_",
                 notes: list | None = None):
        self.graph = graph
        self.num_threads = 1
        self.allow_fallback = bool(fallback)
        self.report = CudaReport(notes=list(notes or []))
        self.templates = CudaTemplates()
        self.prefix = prefix
        self._lock = threading.Lock()
        self.steps = self._plan_steps()
        self._place()
        self._print()

    def _plan_steps(self) -> list:
        try:
            steps = super()._plan_steps()
        except CompileError as e:
            raise CompileError(str(e.message).replace("native CPU lowering", "CUDA lowering"),
                               hint=e.hint if hasattr(e, "hint") else None) from None
        return steps

    # ---- code -----------------------------------------------------------------------------------
    def _print(self) -> None:
        self.plan: list = []
        self.kernel_sources: list[KernelSource] = []
        lines: list[str] = []
        failures = []
        for n, s in enumerate(self.steps):
            if s.kind == "fallback":
                self.plan.append(FallbackStep(s))
                continue
            if s.kind != "kernel":
                continue
            k = s.plan.kernel
            try:
                ks = KernelSource(k, prefix=f"{self.prefix}{n}_")
            except LoweringError as e:
                failures.append((s.node, e.message))
                continue
            self.kernel_sources.append(ks)
            lines.extend(ks.lines)
            bind = {id(b): v for b, v in s.plan.inputs + s.plan.outputs}
            for la in ks.launches:
                refs = [self._ref(b, bind, k.name) for b in la.buffers]
                self.plan.append(LaunchStep(la, refs, k.name))
                self.report.stages[la.kind] = self.report.stages.get(la.kind, 0) + 1
        if failures:
            shown = "; ".join(f"node {n.name!r} (op {n.op}): {m}" for n, m in failures[:20])
            raise CompileError(f"{len(failures)} node(s) have no CUDA lowering: {shown}")
        self.report.launches = sum(1 for p in self.plan if isinstance(p, LaunchStep))
        self.source = "\n".join(lines)
        self.source_sha256 = hashlib.sha256(self.source.encode()).hexdigest()
        self.kernel_params = {p.launch.fn: [self._ctype(p, b) for b in p.launch.buffers]
                              for p in self.plan if isinstance(p, LaunchStep)}
        self.const_offsets, self.const_bytes = _pack_offsets([c.nbytes for c in self.consts])

    def _ctype(self, p: LaunchStep, b) -> str:
        return f"{mem_type(b.dtype)}*"

    def _ref(self, b, bind, kname: str) -> tuple:
        if b.role in ("input", "output"):
            loc = self._where(bind[id(b)])
            if loc.kind == "arena":
                return ("arena", loc.index)
            if loc.kind in ("input", "output"):
                return (loc.kind, loc.index)
            raise CompileError(f"internal: kernel {kname} reads {loc.kind} storage")
        if b.role == "const":
            return ("const", self._cidx[id(b.data)])
        return ("arena", self.temp_off[id(b)])

    def launches(self) -> list:
        return [p for p in self.plan if isinstance(p, LaunchStep)]

    def kernels_ir(self) -> str:
        return "\n\n".join(str(s.plan.kernel) for s in self.steps if s.kind == "kernel")

    def weights_blob(self) -> np.ndarray:
        """Every constant buffer in one byte array at ``const_offsets`` (uploaded once)."""
        blob = np.zeros(max(self.const_bytes, 1), np.uint8)
        for c, off in zip(self.consts, self.const_offsets):
            raw = np.ascontiguousarray(c).view(np.uint8).reshape(-1)
            blob[off:off + raw.size] = raw
        return blob

    def figures(self) -> list[dict]:
        """Per launch: function, schedule, grid, block, estimated flops and bytes."""
        return [{"fn": p.launch.fn, "kernel": p.kernel, "kind": p.launch.kind, "config": p.launch.config,
                 "grid": list(p.launch.grid), "block": list(p.launch.block),
                 "flops": int(p.launch.flops), "bytes": int(p.launch.bytes)} for p in self.launches()]


def _pack_offsets(sizes) -> tuple[list, int]:
    offs, off = [], 0
    for n in sizes:
        offs.append(off)
        off = _align(off + int(n))
    return offs, off


__all__ = ["ALIGN", "CudaProgram", "CudaReport", "FallbackStep", "LaunchStep", "c_name"]
