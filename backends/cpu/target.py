"""The ``cpu`` target: ``irgraph.compile(model, target="cpu", **options)``.

Options:
  ``opt_level``   passes to run on the specialized graph when this factory is used directly
                  (``irgraph.compile`` consumes ``opt_level`` itself and hands over the graph it
                  optimized, so the default here is 0);
  ``fallback``    (default False) run nodes that have no native lowering with the numpy
                  reference between native segments instead of raising CompileError;
  ``num_threads`` (default: all cores) threads for parallel loops (libgomp);
  ``check_types`` accepted for compatibility with ``interp`` (inputs are checked by CompiledModel).

Graphs are compiled for static shapes: a graph whose inputs have symbolic dims is specialized
(every shape re-inferred, shape arithmetic folded) for each new binding of its symbols, on the
call that first sees it, and the compiled program is kept for later calls. The runner's
``report`` (``compiled._run.report``) says which nodes run natively and which fell back.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from irgraph.errors import CompileError, IrgraphError
from irgraph.graph import Graph
from irgraph.ops.evaluate import reinfer
from irgraph.targets import register_target
from irgraph.types import TensorType

from .runtime import Program

# small inputs whose values decide shapes (axes, sizes, repeats …) are compiled in as constants
VALUE_INPUT_MAX_ELEMENTS = 16
MAX_PROGRAMS = 16   # compiled specializations kept per model (least recently used dropped)

OPTIONS = ("opt_level", "fallback", "num_threads", "check_types")


def specialize(graph: Graph, dims: dict, values: dict | None = None) -> Graph:
    """A copy of ``graph`` with its input symbols bound to ``dims``, the inputs listed in
    ``values`` (index -> array) known, and every type re-inferred."""
    g = graph.copy()
    for i, v in enumerate(g.inputs):
        t = v.type
        if t.shape is not None:
            v.type = TensorType([d if isinstance(d, int) else int(dims.get(d, 1)) for d in t.shape], t.dtype)
        v.meta.pop("value", None)
        if values and i in values:
            v.meta["value"] = np.asarray(values[i])
    try:
        reinfer(g)
    except IrgraphError as e:
        raise CompileError(f"the graph's shapes do not hold for dims {dims}: {e}") from e
    return g


def _dynamic_count(g: Graph) -> int:
    return sum(1 for n in g.nodes for o in n.outputs if not o.type.is_static)


def _value_inputs(graph: Graph, g: Graph, dims: dict) -> tuple:
    """Inputs whose values decide shapes: small numeric inputs that, once known, make more of
    the (dims-specialized) graph ``g`` static. Compiled programs are specialized on them."""
    base = _dynamic_count(g)
    if not base:
        return ()
    out = []
    for i, v in enumerate(g.inputs):
        t = v.type
        if not t.is_static or t.numel > VALUE_INPUT_MAX_ELEMENTS or t.dtype.kind not in "iuf":
            continue
        probe = np.ones(t.shape, t.dtype.np)   # any value: only whether shapes become known matters
        try:
            if _dynamic_count(specialize(graph, dims, {i: probe})) < base:
                out.append(i)
        except CompileError:
            out.append(i)   # a value that makes shapes inconsistent still decided them
    return tuple(out)


def _value_dependent(e: CompileError) -> bool:
    """Would knowing small inputs' values help? (an operand needed at compile time, or shapes
    computed from values)"""
    return "only known at run time" in str(e) or "has no static shape" in str(e)


def _symbols(graph: Graph) -> list:
    out = []
    for v in graph.inputs:
        for d in v.type.shape or ():
            if not isinstance(d, int) and d not in out:
                out.append(d)
    return out


def _optimize(graph: Graph, level: int) -> tuple[Graph, list]:
    if level <= 0:
        return graph, []
    from irgraph.passes import PassContext, all_passes, pipeline, run_passes
    have = all_passes()
    names = pipeline(level)
    missing = [p for p in names if p not in have]
    notes = [f"passes not available yet: {', '.join(missing)}"] if missing else []
    g, _ = run_passes(graph, [p for p in names if p in have], PassContext(opt_level=level))
    return g, notes


def _replan(graph: Graph) -> tuple[Graph, list]:
    """A memory plan made for symbolic dims (bound to 1) redone for the specialized shapes."""
    from irgraph.passes import PassContext, run_passes
    try:
        g, _ = run_passes(graph, ["plan_memory"], PassContext())
        return g, []
    except IrgraphError as e:
        graph.meta.pop("memory_plan", None)
        return graph, [f"plan_memory failed on the specialized graph ({e}); planned here instead"]


class CpuRunner:
    """``runner(list_of_arrays) -> list_of_arrays``; compiles once per binding of the symbols."""

    def __init__(self, graph: Graph, opt_level: int, fallback: bool, num_threads: int):
        self.graph = graph
        self.opt_level = opt_level
        self.fallback = fallback
        self.num_threads = num_threads
        self.symbols = _symbols(graph)
        self.programs: OrderedDict = OrderedDict()
        self._value_idx: dict = {}
        self._lock = threading.RLock()
        self.last: Program | None = None
        self._fixed: Program | None = None     # the one program of a model without symbols or value inputs
        if not self.symbols and not self._values_for({}):
            try:
                self.last = self._fixed = self._program({}, {})
            except CompileError as e:
                # an operand only known at run time: compile on the first call, for its value
                if not _value_dependent(e) or not self._small_inputs(()):
                    raise
                self._value_idx[()] = self._small_inputs(())

    def _values_for(self, dims: dict) -> tuple:
        key = tuple(sorted(dims.items()))
        with self._lock:
            if key not in self._value_idx:
                self._value_idx[key] = _value_inputs(self.graph, specialize(self.graph, dims), dims)
            return self._value_idx[key]

    def _program(self, dims: dict, values: dict) -> Program:
        key = (tuple(sorted(dims.items())),
               tuple((i, str(a.dtype), a.shape, a.tobytes()) for i, a in sorted(values.items())))
        with self._lock:
            p = self.programs.get(key)
            if p is not None:
                self.programs.move_to_end(key)
                return p
            g = specialize(self.graph, dims, values)
            g, notes = _optimize(g, self.opt_level)
            if (dims or values) and self.opt_level == 0 and "memory_plan" in g.meta:
                g, note = _replan(g)
                notes += note
            if values:
                notes = [f"specialized on the values of input(s) "
                         f"{', '.join(self.graph.inputs[i].name for i in values)}"] + notes
            if dims:
                notes = [f"specialized for {dims}"] + notes
            p = self._build(g, notes)
            self.programs[key] = p
            while len(self.programs) > MAX_PROGRAMS:
                self.programs.popitem(last=False)
            return p

    def _build(self, g: Graph, notes: list) -> Program:
        """The program of one specialized, optimized graph (the CUDA runners build theirs)."""
        return Program(g, num_threads=self.num_threads, fallback=self.fallback, notes=notes)

    def prepare(self, dims: dict) -> bool:
        """Compile (and keep) the program for these sizes of the symbols without running it;
        False when the program also depends on input values, which only a run provides."""
        if self._values_for(dict(dims)):
            return False
        self.last = self._program(dict(dims), {})
        return True

    def __call__(self, inputs):
        if self._fixed is not None:
            return self._fixed.run(inputs)
        dims = {}
        for v, a in zip(self.graph.inputs, inputs):
            for d, n in zip(v.type.shape or (), a.shape):
                if not isinstance(d, int):
                    dims[d] = int(n)
        values = {i: np.array(inputs[i], copy=True) for i in self._values_for(dims)}
        try:
            p = self._program(dims, values)
        except CompileError as e:
            # a lowering needs an operand's value (roi, axis …): specialize on every small input
            more = self._small_inputs(values) if _value_dependent(e) else ()
            if not more:
                raise
            with self._lock:
                self._value_idx[tuple(sorted(dims.items()))] = tuple(sorted(set(values) | set(more)))
            values.update({i: np.array(inputs[i], copy=True) for i in more})
            p = self._program(dims, values)
        self.last = p
        return p.run(inputs)

    def _small_inputs(self, have) -> tuple:
        out = []
        for i, v in enumerate(self.graph.inputs):
            t = v.type
            if i not in have and t.is_static and t.numel <= VALUE_INPUT_MAX_ELEMENTS and t.dtype.kind in "iuf":
                out.append(i)
        return tuple(out)

    @property
    def report(self):
        """The report of the most recently compiled/used program (None before the first call
        of a model with symbolic dims)."""
        return None if self.last is None else self.last.report

    def kernels_ir(self) -> str:
        return "" if self.last is None else self.last.kernels_ir()


def cpu_factory(graph: Graph, **options) -> CpuRunner:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise CompileError(f"target 'cpu' has no option(s) {unknown}", hint="options: " + ", ".join(OPTIONS))
    level = int(options.get("opt_level") or 0)
    if level < 0:
        raise CompileError("opt_level must be >= 0", actual=level)
    threads = options.get("num_threads")
    if threads is None:
        from .threads import default_num_threads
        threads = default_num_threads()
    threads = int(threads)
    if threads < 1:
        raise CompileError("num_threads must be >= 1", actual=threads)
    return CpuRunner(graph, level, bool(options.get("fallback", False)), threads)


register_target("cpu", cpu_factory)
