"""The ``cuda`` and ``cuda-emulator`` targets: ``irgraph.compile(model, target="cuda", **options)``.

Both generate the same CUDA C for each specialization of the graph (static shapes, as the cpu
target: a graph with symbolic dims compiles per binding, on the call that first sees it).

``cuda``: kernels are compiled by nvcc to a cubin per ``arch`` plus PTX (no GPU needed); a
graph with symbolic dims is also compiled right away for the memory plan's binding (every
symbol 1 by default), so ``irgraph compile --target cuda -o model.irg`` holds machine code.
Running needs PyCUDA and a device (``runtime_pycuda.py``); without them a call raises one
clear ``ExecutionError`` line.

``cuda-emulator``: the kernels compiled for the host with g++ and run with CUDA threads as
fibers (``emulator.py``), under the ``schedule`` chosen: forward, reverse or shuffled (with
``seed``). ``sanitize=True`` is an AddressSanitizer build (needs libasan preloaded).

Options: ``opt_level``, ``fallback`` (numpy reference for nodes without a CUDA lowering),
``check_types`` (accepted, as on cpu); cuda: ``arch`` ("sm_80,sm_90" or a list), ``device``,
``graphs`` (replay the launches as one CUDA graph where PyCUDA can; default True);
cuda-emulator: ``schedule``, ``seed``, ``sanitize``.
"""
from __future__ import annotations

from irgraph.errors import CompileError
from irgraph.graph import Graph
from irgraph.targets import register_target

from ..served import ServedTable
from ..cpu.target import CpuRunner
from . import nvcc
from .emulator import ORDERS
from .program import CudaProgram

COMMON = ("opt_level", "fallback", "check_types")
OPTIONS = {"cuda": COMMON + ("arch", "device", "graphs"),
           "cuda-emulator": COMMON + ("schedule", "seed", "sanitize")}

class use_binaries(ServedTable):
    """``with use_binaries({source_sha256: Binaries}):`` cuda programs built inside take their
    cubins/PTX from here instead of running nvcc (artifacts; see ``backends/served.py``);
    ``.used`` lists the hashes served."""


class CudaExecutable:
    """A program compiled by nvcc; runs through PyCUDA on the first call that needs it."""

    def __init__(self, program: CudaProgram, archs, device: int = 0, graphs: bool = True):
        self.program = program
        self.graphs = graphs
        self.report = program.report
        hit = use_binaries.take(program.source_sha256, accept=lambda b: set(archs) <= set(b.cubins))
        self.binaries = hit if hit is not None else nvcc.compile_source(program.source, archs)
        self.device = device
        self._session = None

    def kernels_ir(self) -> str:
        return self.program.kernels_ir()

    def run(self, inputs) -> list:
        if self._session is None:
            from .runtime_pycuda import PyCudaSession
            self._session = PyCudaSession(self.program, self.binaries, self.device, graphs=self.graphs)
        return self._session.run(inputs)


class EmulatedExecutable:
    """A program compiled for the host; every call runs in the emulator."""

    def __init__(self, program: CudaProgram, schedule: str, seed: int, sanitize):
        from .runtime_emu import EmuExecutor
        self.program = program
        self.report = program.report
        self.executor = EmuExecutor(program, sanitize=sanitize)
        self.schedule = schedule
        self.seed = seed

    def kernels_ir(self) -> str:
        return self.program.kernels_ir()

    def run(self, inputs, schedule: str | None = None, seed: int | None = None) -> list:
        return self.executor.run(inputs, order=schedule or self.schedule,
                                 seed=self.seed if seed is None else seed)


class PlannedExecutable:
    """A program printed but not compiled (``ProgramPlanner``)."""

    def __init__(self, program: CudaProgram):
        self.program = program
        self.report = program.report

    def kernels_ir(self) -> str:
        return self.program.kernels_ir()

    def run(self, inputs) -> list:
        return []


class CudaRunner(CpuRunner):
    """``runner(arrays) -> arrays`` for both CUDA targets (the cpu runner's specialization logic)."""

    def __init__(self, graph: Graph, target: str, opt_level: int, fallback: bool, options: dict):
        self.target = target
        self.options = options
        super().__init__(graph, opt_level, fallback, 1)
        if target == "cuda" and self.symbols and not self.programs:
            plan = graph.meta.get("memory_plan") or {}
            pdims = plan.get("dims") if isinstance(plan, dict) else None
            dims = {s: int((pdims or {}).get(s, 1)) for s in self.symbols}
            try:
                if not self._values_for(dims):
                    self.last = self._program(dims, {})
            except CompileError:
                pass   # shapes that need input values compile on the first call instead

    def _build(self, g: Graph, notes: list):
        prefix = f"{self.options.get('prefix', 'irg')}{len(self.programs)}_"
        prog = CudaProgram(g, fallback=self.fallback, prefix=prefix, notes=notes)
        if self.target == "plan":
            return PlannedExecutable(prog)
        if self.target == "cuda":
            return CudaExecutable(prog, self.options["arch"], self.options["device"], self.options["graphs"])
        return EmulatedExecutable(prog, self.options["schedule"], self.options["seed"], self.options["sanitize"])


class ProgramPlanner(CudaRunner):
    """The CUDA programs a target would build for given inputs (the same specialization on dims
    and small input values), printed but not compiled: for tools and tests that put many
    programs into one emulator library or one nvcc run. ``graph``: already optimized."""

    def __init__(self, graph: Graph, prefix: str = "irg"):
        super().__init__(graph, "plan", 0, False, {"prefix": prefix})

    def program(self, inputs) -> CudaProgram:
        self(inputs)
        return self.last.program


def _archs(value) -> tuple:
    if value is None:
        return nvcc.DEFAULT_ARCHS
    if isinstance(value, str):
        value = [a.strip() for a in value.split(",") if a.strip()]
    archs = tuple(str(a) for a in value)
    if not archs:
        raise CompileError("arch: no CUDA arch given", expected="e.g. sm_80,sm_90")
    import re
    bad = [a for a in archs if not re.fullmatch(r"sm_\d+a?", a)]
    if bad:
        raise CompileError(f"arch: unknown CUDA arch(s) {bad}", expected="names like sm_80, sm_90")
    return archs


def _factory(target: str):
    def make(graph: Graph, **options) -> CudaRunner:
        unknown = sorted(set(options) - set(OPTIONS[target]))
        if unknown:
            raise CompileError(f"target {target!r} has no option(s) {unknown}",
                               hint="options: " + ", ".join(OPTIONS[target]))
        level = int(options.get("opt_level") or 0)
        if level < 0:
            raise CompileError("opt_level must be >= 0", actual=level)
        opts: dict = {}
        if target == "cuda":
            opts["arch"] = _archs(options.get("arch"))
            opts["device"] = int(options.get("device") or 0)
            opts["graphs"] = bool(options.get("graphs", True))
        else:
            sched = options.get("schedule", "forward")
            if sched not in ORDERS:
                raise CompileError(f"unknown emulator schedule {sched!r}", expected=", ".join(ORDERS), actual=sched)
            opts["schedule"] = sched
            opts["seed"] = int(options.get("seed") or 0)
            opts["sanitize"] = options.get("sanitize")
        return CudaRunner(graph, target, level, bool(options.get("fallback", False)), opts)
    return make


register_target("cuda", _factory("cuda"))
register_target("cuda-emulator", _factory("cuda-emulator"))
