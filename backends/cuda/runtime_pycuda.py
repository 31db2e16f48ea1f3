"""Run a compiled ``CudaProgram`` on a GPU through PyCUDA (the optional ``irgraph[cuda]`` extra).

    sess = PyCudaSession(program, binaries, device=0)   # loads the cubin, uploads weights once
    outs = sess.run([x])

The module is the cubin built for the device's arch (``sm_XY``; a cubin of the same major and
a lower minor runs too), else the PTX, JIT-compiled by the driver. Device memory is one
allocation for every constant (``CudaProgram.weights_blob``), one arena of
``program.arena_bytes`` (the ``plan_memory`` offsets) and one buffer per graph input and
output; each launch gets raw pointers into them and is queued on one stream. Numpy fallback
nodes (``fallback=True``) synchronize, copy the arena to the host and back.

CUDA graphs: where PyCUDA has stream capture (``Stream.begin_capture``, 2021.1 and later) and
the plan has no fallback node, the first call records every launch into a graph and later calls
replay it with one ``GraphExec.launch`` (the inputs' and outputs' copies stay outside the
graph, so only the device buffers must stay put: a call that needs larger ones re-records).
A capture the driver refuses turns graphs off for the session and the launches run one by one.
``graphs=False`` (the target option) always launches one by one.

Without PyCUDA, a driver or a device, ``PyCudaSession`` raises one ``ExecutionError`` line
saying which is missing; compiling (``irgraph compile --target cuda``) never needs them.
"""
from __future__ import annotations

import numpy as np

from irgraph.errors import ExecutionError

from ..cpu.runtime import _nbytes, _static
from .program import CudaProgram, FallbackStep, LaunchStep

_HINT = "compiling needs no GPU (irgraph compile --target cuda -o model.irg); target 'cuda-emulator' runs the same kernels on the CPU"


def _driver():
    try:
        import pycuda.driver as drv  # type: ignore
    except ImportError as e:
        msg = str(e)
        if "libcuda" in msg:
            raise ExecutionError(f"target 'cuda' cannot run here: no CUDA driver ({msg.split(':')[0]})",
                                 hint=_HINT) from None
        raise ExecutionError("target 'cuda' needs PyCUDA to run kernels: pip install 'irgraph[cuda]'",
                             hint=_HINT) from None
    try:
        drv.init()
        count = drv.Device.count()
    except Exception as e:
        raise ExecutionError(f"target 'cuda' cannot run here: the CUDA driver failed to start "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})",
                             hint=_HINT) from None
    if count == 0:
        raise ExecutionError("target 'cuda' cannot run here: no CUDA device found", hint=_HINT)
    return drv


def pick_image(binaries, cc: tuple) -> tuple[str, bytes]:
    """(what, image) for a device of compute capability ``cc``: the exact cubin, else a cubin of
    the same major arch and a lower minor, else the PTX."""
    want = cc[0] * 10 + cc[1]
    best = None
    for arch, cubin in binaries.cubins.items():
        if arch.endswith("a"):
            if int(arch[3:-1]) == want:
                return arch, cubin
            continue
        n = int(arch[3:])
        if n == want:
            return arch, cubin
        if n // 10 == want // 10 and n < want and (best is None or n > best[0]):
            best = (n, arch, cubin)
    if best is not None:
        return best[1], best[2]
    if binaries.ptx:
        return binaries.ptx_arch, binaries.ptx.encode() + b"\0"
    raise ExecutionError(f"no cubin or PTX for this GPU (sm_{want}); compiled for {sorted(binaries.cubins)}",
                         hint="compile with arch=... including this GPU")


def graphs_supported(drv) -> bool:
    """Does this PyCUDA capture streams into graphs?"""
    stream = getattr(drv, "Stream", None)
    return hasattr(stream, "begin_capture") and hasattr(stream, "end_capture")


class PyCudaSession:
    def __init__(self, program: CudaProgram, binaries, device: int = 0, graphs: bool = True,
                 driver=None):
        drv = driver if driver is not None else _driver()
        self.drv = drv
        self.program = program
        dev = drv.Device(int(device))
        self.device_name = dev.name()
        self.ctx = dev.retain_primary_context()
        self.ctx.push()
        try:
            self.image_arch, image = pick_image(binaries, dev.compute_capability())
            self.module = drv.module_from_buffer(image)
            self.funcs = {}
            for p in program.launches():
                fn = p.launch.fn
                if fn not in self.funcs:
                    f = self.module.get_function(fn)
                    f.prepare("P" * len(p.launch.buffers))
                    self.funcs[fn] = f
            blob = program.weights_blob()
            self.weights = drv.mem_alloc(max(blob.nbytes, 1))
            drv.memcpy_htod(self.weights, blob)       # uploaded once
            self.arena = drv.mem_alloc(max(program.arena_bytes, 1))
            self.stream = drv.Stream()
            self._io: dict = {}
        finally:
            self.ctx.pop()
        self.graphs = bool(graphs) and graphs_supported(drv) and \
            not any(isinstance(p, FallbackStep) for p in program.plan)
        self.graph_note = ""        # why graphs were turned off, if they were
        self._graph = None          # (buffer pointers it was recorded with, GraphExec)
        self.graph_launches = 0

    def _buffer(self, key, nbytes: int):
        buf = self._io.get(key)
        if buf is None or buf[1] < nbytes:
            buf = (self.drv.mem_alloc(max(nbytes, 1)), nbytes)
            self._io[key] = buf
        return buf[0]

    def _ptr(self, ref, ins_d, outs_d) -> np.uintp:
        kind, i = ref
        if kind == "input":
            return np.uintp(int(ins_d[i]))
        if kind == "output":
            return np.uintp(int(outs_d[i]))
        if kind == "const":
            return np.uintp(int(self.weights) + self.program.const_offsets[i])
        return np.uintp(int(self.arena) + i)

    def run(self, inputs) -> list:
        drv, prog = self.drv, self.program
        g = prog.graph
        ins = [np.ascontiguousarray(a) for a in inputs]
        outs = [np.empty(v.type.shape, v.dtype.np) if _static(v) else None for v in g.outputs]
        self.ctx.push()
        try:
            ins_d = [self._buffer(("in", i), a.nbytes) for i, a in enumerate(ins)]
            outs_d = [self._buffer(("out", j), 0 if a is None else a.nbytes) for j, a in enumerate(outs)]
            for a, d in zip(ins, ins_d):
                drv.memcpy_htod_async(d, a, self.stream)
            py: dict = {}
            if self.graphs:
                self._replay(ins_d, outs_d)
            else:
                for step in prog.plan:
                    if isinstance(step, LaunchStep):
                        self._launch(step, ins_d, outs_d)
                    elif isinstance(step, FallbackStep):
                        self._fallback(step, ins, outs, outs_d, py)
            for j, (a, d) in enumerate(zip(outs, outs_d)):
                if a is not None and a.nbytes:
                    drv.memcpy_dtoh_async(a, d, self.stream)
            self.stream.synchronize()
            return [self._result(j, v, ins, outs, py) for j, v in enumerate(g.outputs)]
        finally:
            self.ctx.pop()

    def _launch(self, step: LaunchStep, ins_d, outs_d) -> None:
        la = step.launch
        args = [self._ptr(r, ins_d, outs_d) for r in step.refs]
        self.funcs[la.fn].prepared_async_call(la.grid, la.block, self.stream, *args)

    def _replay(self, ins_d, outs_d) -> None:
        """Every launch of the plan as one graph launch, recorded on first use (and again when
        the input/output buffers moved: their addresses are baked into the recorded launches)."""
        key = tuple(int(d) for d in ins_d) + (None,) + tuple(int(d) for d in outs_d)
        if self._graph is None or self._graph[0] != key:
            steps = [p for p in self.program.plan if isinstance(p, LaunchStep)]
            try:
                self.stream.begin_capture()
                try:
                    for step in steps:
                        self._launch(step, ins_d, outs_d)
                finally:
                    graph = self.stream.end_capture()
                self._graph = (key, graph.instantiate())
            except Exception as e:   # capture refused (old driver, ...): launch one by one
                self.graphs = False
                self._graph = None
                self.graph_note = f"CUDA graphs off: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                for step in steps:
                    self._launch(step, ins_d, outs_d)
                return
        self._graph[1].launch(self.stream)
        self.graph_launches += 1

    def _fallback(self, step: FallbackStep, ins, outs, outs_d, py) -> None:
        drv, prog = self.drv, self.program
        self.stream.synchronize()
        prog.arena = getattr(prog, "arena", None)
        if prog.arena is None or prog.arena.nbytes != prog.arena_bytes:
            prog.arena = np.zeros(prog.arena_bytes, np.uint8)
        if prog.arena_bytes:
            drv.memcpy_dtoh(prog.arena, self.arena)
        for a, d in zip(outs, outs_d):
            if a is not None and a.nbytes:
                drv.memcpy_dtoh(a, d)
        prog._run_fallback(step.step.node, ins, outs, py)
        if prog.arena_bytes:
            drv.memcpy_htod(self.arena, prog.arena)
        for a, d in zip(outs, outs_d):
            if a is not None and a.nbytes:
                drv.memcpy_htod(d, a)

    def _result(self, j, v, ins, outs, py) -> np.ndarray:
        prog = self.program
        loc = prog._where(v)
        if loc.kind == "output" and loc.index == j:
            return outs[j]
        if loc.kind == "output":
            return np.array(outs[loc.index].reshape(v.type.shape), copy=True)
        if loc.kind == "arena":
            host = np.empty(_nbytes(v), np.uint8)
            self.drv.memcpy_dtoh(host, int(self.arena) + loc.index)
            return host.view(v.dtype.np).reshape(v.type.shape)
        return np.array(prog._array(v, ins, outs, py), copy=True)
