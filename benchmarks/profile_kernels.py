"""Per-kernel latency of a model on the ``cpu`` target, beside onnxruntime's per-node profile.

    python benchmarks/profile_kernels.py MODEL.onnx [--threads N] [--repeat R] [--ort] [--top K]

Compiles the model as ``irgraph.compile(..., target="cpu")`` does, then builds the same kernels
with one entry function per kernel and times each alone (median of R calls over the arena of
a full run, so inputs hold realistic data). For kernels holding a conv or matmul it prints the
FLOPs and the GFLOP/s reached. ``--ort`` adds onnxruntime's own per-node times (its profiler,
same thread count) for the node names each kernel came from. A diagnostic, not an asv suite.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

STAT = "median"     # or "min" (--min): the fastest call, steadier on a busy machine


def node_flops(n) -> int:
    """Multiply-adds x 2 of a conv / matmul node (0 for anything else); walks fused bodies."""
    if n.op == "fused":
        return sum(node_flops(m) for m in n.attrs["body"].nodes)
    if n.op == "conv":
        w = n.inputs[1].type.shape
        out = n.outputs[0].type.shape
        return 2 * int(np.prod(out)) * int(np.prod(w[1:]))
    if n.op == "matmul":
        a = n.inputs[0].type.shape
        out = n.outputs[0].type.shape
        return 2 * int(np.prod(out)) * int(a[-1])
    return 0


def _profiled_program(graph, threads: int):
    from irgraph.backends.cpu.codegen import ModuleGen
    from irgraph.backends.cpu.runtime import Program, _compile_module

    class Profiled(Program):
        """One native entry per kernel (the real Program has one per segment)."""

        def _compile(self):
            mg = ModuleGen("profile", self.num_threads)
            self.segments, self.kernel_steps = [], []
            for t, s in enumerate(self.steps):
                if s.kind != "kernel":
                    if s.kind == "fallback":
                        raise SystemExit(f"fallback node {s.node.name}: profile needs all-native models")
                    continue
                k = s.plan.kernel
                kfn = mg.add_kernel(k, noalias=not k.attrs.get("aliased"))
                bind = {id(b): v for b, v in s.plan.inputs + s.plan.outputs}
                refs = []
                for b in k.buffers:
                    if b.role in ("input", "output"):
                        loc = self._where(bind[id(b)])
                        refs.append(("arena", loc.index) if loc.kind == "arena" else (loc.kind, loc.index))
                    elif b.role == "const":
                        refs.append(("const", self._cidx[id(b.data)]))
                    else:
                        refs.append(("arena", self.temp_off[id(b)]))
                name = f"prof_k{t}"
                mg.add_entry(name, [(kfn, refs)])
                self.segments.append(("native", name))
                self.kernel_steps.append(s)
            self.llvm_ir = str(mg.module)
            self.lib = _compile_module(mg, self.llvm_ir)
            argt = [ctypes.c_void_p] * 4
            self._entries = {n: self.lib.cfunc(n, None, *argt) for _, n in self.segments}
            self._arena_raw = np.zeros(self.arena_bytes + 64, np.uint8)
            off = (-self._arena_raw.ctypes.data) % 64
            self.arena = self._arena_raw[off:off + self.arena_bytes]
            self._const_ptrs = (ctypes.c_void_p * max(1, len(self.consts)))(
                *[c.ctypes.data for c in self.consts])
    return Profiled(graph, num_threads=threads)


def time_kernels(graph, arrays, threads: int, repeat: int, clock=time.perf_counter_ns):
    """Build ``graph`` (a model's last specialized graph) with one entry per kernel and time each
    kernel alone, ``repeat`` times, over the arena of a full run on ``arrays``: ``[(step, [ns
    per call])]`` in kernel order. ``clock`` returns nanoseconds."""
    prog = _profiled_program(graph, threads)
    ins = [np.ascontiguousarray(a) for a in arrays]
    outs = [np.empty(v.type.shape, v.dtype.np) for v in prog.graph.outputs]
    in_p = (ctypes.c_void_p * max(1, len(ins)))(*[a.ctypes.data for a in ins])
    out_p = (ctypes.c_void_p * max(1, len(outs)))(*[a.ctypes.data for a in outs])
    arena = prog.arena.ctypes.data if prog.arena_bytes else prog._arena_raw.ctypes.data
    fns = [prog._entries[n] for _, n in prog.segments]
    for f in fns:          # one full pass: the arena holds real intermediates
        f(in_p, out_p, prog._const_ptrs, arena)
    times = [[] for _ in fns]
    for _ in range(repeat):  # round-robin, like irgraph bench: drift hits every kernel alike
        for i, f in enumerate(fns):
            t0 = clock()
            f(in_p, out_p, prog._const_ptrs, arena)
            times[i].append(clock() - t0)
    return list(zip(prog.kernel_steps, times))


def profile(path: str, threads: int, repeat: int):
    import irgraph
    from irgraph.bench import compile_with_threads
    from irgraph.random_inputs import random_inputs
    m, _, _ = compile_with_threads(irgraph.to_graph(path), "cpu", None, threads)
    feeds = random_inputs(dict(zip(m.input_names, m.input_types)), seed=0)
    arrays = [feeds[n] for n in m.input_names]
    m.run(*arrays)
    rows = []
    for s, ts in time_kernels(m._run.last.graph, arrays, threads, repeat):
        rows.append({"kernel": s.plan.kernel.name, "source": list(s.plan.kernel.source),
                     "us": (min(ts) if STAT == "min" else statistics.median(ts)) / 1e3, "flops": node_flops(s.node),
                     "shape": list(s.node.outputs[0].type.shape)})
    return rows


def ort_profile(path: str, threads: int, repeat: int) -> dict:
    """Per-node median microseconds from onnxruntime's profiler (node name -> us)."""
    import onnxruntime as ort
    from irgraph.random_inputs import random_inputs
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_profiling = True
    so.log_severity_level = 3
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    import irgraph
    g = irgraph.to_graph(path)
    feeds = random_inputs({v.name: v.type for v in g.inputs}, seed=0)
    for _ in range(repeat):
        sess.run(None, feeds)
    prof = sess.end_profiling()
    with open(prof) as f:
        events = json.load(f)
    per: dict = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per.setdefault(e["name"][:-len("_kernel_time")], []).append(e["dur"])
    return {k: statistics.median(v) for k, v in per.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--ort", action="store_true")
    ap.add_argument("--top", type=int, default=0, help="only the K slowest kernels")
    ap.add_argument("--min", action="store_true", help="report each kernel's fastest call, not the median")
    a = ap.parse_args(argv)
    global STAT
    STAT = "min" if a.min else "median"
    rows = profile(a.model, a.threads, a.repeat)
    ort_t = ort_profile(a.model, a.threads, a.repeat) if a.ort else {}
    total = sum(r["us"] for r in rows)
    shown = sorted(rows, key=lambda r: -r["us"])[:a.top] if a.top else rows
    print(f"{'kernel':44s} {'out shape':>18s} {'us':>8s} {'GF/s':>6s} {'ort us':>8s} {'x ort':>6s}")
    ort_total = 0.0
    for r in shown:
        gf = f"{r['flops'] / r['us'] / 1e3:6.1f}" if r["flops"] else ""
        ou = sum(ort_t.get(s, 0.0) for s in r["source"]) if ort_t else 0.0
        ort_total += ou
        ratio = f"{r['us'] / ou:6.2f}" if ou else ""
        print(f"{r['kernel'][:44]:44s} {str(r['shape']):>18s} {r['us']:8.1f} {gf:>6s} "
              f"{(f'{ou:8.1f}' if ou else ''):>8s} {ratio:>6s}")
    flops = sum(r["flops"] for r in rows)
    print(f"total {total / 1e3:.2f} ms over {len(rows)} kernels, {flops / 1e9:.2f} GFLOP, "
          f"{flops / total / 1e3:.1f} GFLOP/s" + (f"; ort nodes {sum(ort_t.values()) / 1e3:.2f} ms"
                                                  if ort_t else ""))


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    main()
