"""Helpers of the CUDA backend tests: many programs in one emulator build / one nvcc call.

Building one emulator library costs seconds (g++), so the tests print every program they need
first, with distinct symbol prefixes, and compile the concatenated source once (cached on disk
by its hash, as the targets do)."""
from __future__ import annotations

import numpy as np

from irgraph.api import optimize_graph
from irgraph.backends.cpu.target import specialize
from irgraph.backends.cuda import emulator
from irgraph.backends.cuda.program import CudaProgram
from irgraph.backends.cuda.runtime_emu import EmuExecutor

SCHEDULES = (("forward", 0), ("reverse", 0), ("shuffled", 7))


def program_for(model, dims: dict | None = None, prefix: str = "t_", opt_level: int = 2,
                values: dict | None = None) -> CudaProgram:
    """The CUDA program of ``model`` (ONNX or Graph) optimized at ``opt_level`` for ``dims``, with
    the inputs in ``values`` (index -> array) known at compile time."""
    from irgraph.api import to_graph
    g, _ = optimize_graph(model, opt_level) if opt_level else (to_graph(model), None)
    g = specialize(g, dict(dims or {}), values)
    if dims:
        from irgraph.passes import PassContext, run_passes
        g, _ = run_passes(g, ["plan_memory"], PassContext())
    return CudaProgram(g, prefix=prefix)


def shared_module(programs, sanitize: bool = False):
    """One emulator build holding every program's kernels."""
    source = "\n".join(p.source for p in programs)
    params: dict = {}
    for p in programs:
        params.update(p.kernel_params)
    return emulator.build(source, params, sanitize=sanitize)


def run_schedules(program: CudaProgram, module, inputs, schedules=SCHEDULES, sanitize: bool = False):
    """Outputs under each schedule: {(order, seed): [arrays]}."""
    ex = EmuExecutor(program, module=module, sanitize=sanitize)
    try:
        return {(o, s): ex.run(inputs, order=o, seed=s) for o, s in schedules}
    finally:
        ex.close()


def assert_schedules_agree(results: dict) -> list:
    """Every schedule gives bit-identical outputs (no races, no reads of unwritten shared memory)."""
    items = list(results.items())
    ref = items[0][1]
    for key, outs in items[1:]:
        for i, (a, b) in enumerate(zip(ref, outs)):
            assert np.array_equal(a, b, equal_nan=True), f"output {i} differs between {items[0][0]} and {key}"
    return ref
