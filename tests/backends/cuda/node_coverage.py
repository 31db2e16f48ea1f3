"""Every ONNX node case the CPU backend passes, printed for CUDA once per test session.

Each case is imported, optimized at -O2 and specialized exactly as the ``cuda`` targets do
(``ProgramPlanner``: dims and small input values), one program per data set. All programs'
kernels then go into one ``KernelBatch``: identical kernels (same op and shapes, different
names) are kept once — about a third of the ~6,000 launches are unique — and split into a few
translation units, built once for the emulator (``-O0``: 5x faster to compile than -O2, same
arithmetic) and, for the compile gate, once per arch by nvcc; both cached on disk by the
source hash. Shared by test_cuda_node_cases.py and test_cuda_node_gate.py.
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_TESTS = os.path.dirname(os.path.dirname(_HERE))
for _p in (_HERE, os.path.join(_TESTS, "backends", "cpu"), os.path.join(_TESTS, "frontends", "onnx")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from cpu_expected_failures import CPU_EXPECTED_FAILURES  # noqa: E402
from expected_failures import EXPECTED_FAILURES  # noqa: E402
from node_cases import load_cases  # noqa: E402

SHARDS = 8
EMULATOR_OPT = "-O0"

_state: dict = {}


def all_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_cases()


def cpu_passing(cases) -> list:
    """The node cases the CPU backend passes (the interpreter's and the CPU's lists excluded)."""
    return [c for c in cases if c.name not in EXPECTED_FAILURES and c.name not in CPU_EXPECTED_FAILURES]


def plan_case(case, index: int) -> list:
    """The CUDA programs of ``case``, one per data set (raises what compiling would raise)."""
    from irgraph.api import optimize_graph
    from irgraph.backends.cuda.target import ProgramPlanner
    from irgraph.frontends.onnx.backend import _to_numpy
    from irgraph.frontends.onnx.importer import import_model
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        g, _ = optimize_graph(import_model(case.model), 2)
        planner = ProgramPlanner(g, prefix=f"n{index}_")
        return [planner.program(_to_numpy(list(inputs))) for inputs, _ in case.data_sets]


def planned():
    """(cases, {name: [programs]}, {name: exception}, KernelBatch), computed once."""
    if "batch" not in _state:
        from irgraph.backends.cuda.batch import KernelBatch
        cases = cpu_passing(all_cases())
        progs, errors = {}, {}
        for i, c in enumerate(cases):
            try:
                progs[c.name] = plan_case(c, i)
            except Exception as e:   # reported by the case's own test
                errors[c.name] = e
        _state.update(cases=cases, programs=progs, errors=errors,
                      batch=KernelBatch([p for ps in progs.values() for p in ps], shards=SHARDS))
    return _state["cases"], _state["programs"], _state["errors"], _state["batch"]


def emulator_module():
    if "module" not in _state:
        _state["module"] = planned()[3].emulator(opt=EMULATOR_OPT, workers=2)
    return _state["module"]
