"""Latency of a compiled model against peer runtimes, measured in one process.

    from irgraph.bench import bench
    result = bench("model.onnx", target="cpu", compare=["onnxruntime"], threads=2)
    print(result.format())        # the table ``irgraph bench`` prints
    result.to_dict()              # the document ``irgraph bench --json`` prints

How it measures (so that a ratio means something):

- The symbolic dims of the ONNX model's inputs are bound first (``dims``; every other symbol
  is 1), so irgraph and every peer compile and run the same static shapes, and ``compile_s``
  includes the backend's code generation (a target that specializes on the first call would
  otherwise hide it there; ``first_run_s`` is reported too).
- Every runtime gets the same seeded random inputs (``irgraph.random_inputs``).
- After the warm-up the runtimes take turns, the starting runtime rotating, so drifting machine
  load (clock changes, other processes) hits all alike. Per runtime: median, 10th and 90th
  percentile of the per-call times. How they take turns is the ``schedule``:
  ``interleaved`` (one call each per repetition) at 1 thread; ``blocks`` at N > 1 threads:
  each turn is a block of consecutive calls of one runtime, started after ``SETTLE_S`` of idle
  time and ``BLOCK_WARMUP`` untimed calls. On few cores an interleaved call at N > 1 threads
  measures two thread pools fighting: after a call OpenBLAS's idle workers busy-wait ~0.1 s
  and onnxruntime's and irgraph's spin ~40 ms, holding a core the next runtime's call needs
  (matmul 1024 at 2 threads on 2 cores: irgraph 12.0 ms and numpy 9.6 ms interleaved, 6.1 and
  5.9 ms with 0.2 s of idle before each call). A block lets the other pools fall asleep
  first and then times each runtime with its own pool warm, as a program calling it in a
  loop would see it.
- Same thread count everywhere: onnxruntime gets ``intra_op_num_threads=N`` (inter-op 1,
  sequential), irgraph targets that take ``num_threads`` get N, and numpy's OpenBLAS (the
  interpreter's matmuls, the ``numpy`` peer) is set to N for the duration.
- irgraph's outputs from the first call are compared with each peer's: the largest absolute
  error and that error relative to the peer output's largest magnitude (a scale-relative error:
  near-zero elements do not blow it up). Outside ``atol + rtol * max|peer|`` the result says
  ``outputs_match=False`` and ``irgraph bench`` exits with status 1: a benchmark of wrong
  results is worthless.

Peers: ``onnxruntime`` (its CPU provider; needs an ONNX model), ``numpy`` (irgraph's numpy
reference interpreter, -O0) and any registered irgraph target by name (``interp``, ``cpu``).

``gap_s`` sleeps before every timed call (either schedule), so that each call starts on quiet
cores and pays its own pool's wake-up: the latency of a model called now and then.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import glob
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from .errors import CompileError, InputError, IrgraphError
from .graph import Graph
from .types import TensorType

IRGRAPH = "irgraph"          # the key of the measured irgraph runtime in results
ONNXRUNTIME = "onnxruntime"
NUMPY = "numpy"
DEFAULT_WARMUP = 3
DEFAULT_BUDGET_S = 3.0       # adaptive repeat: about this long for all timed repetitions
MIN_REPEAT, MAX_REPEAT = 7, 10000
SCHEDULES = ("auto", "interleaved", "blocks")
# blocks schedule: idle time before a block (longer than any peer pool's busy-waiting: OpenBLAS
# ~0.1 s), untimed calls that open it, and how many turns each runtime gets at most
SETTLE_S = 0.2
BLOCK_WARMUP = 2
BLOCK_ROUNDS = 5
DEFAULT_RTOL, DEFAULT_ATOL = 1e-3, 1e-5
# targets known to take no num_threads option (others are tried with it)
_THREADLESS_TARGETS = {"interp"}


# ---- measuring ----------------------------------------------------------------------------------

def resolve_schedule(schedule: str, threads: int, runtimes: int = 2) -> str:
    """``auto`` is ``blocks`` when several runtimes run at more than one thread, else
    ``interleaved`` (one runtime alone has no other pool to fight)."""
    if schedule not in SCHEDULES:
        raise InputError(f"unknown schedule {schedule!r}", expected=list(SCHEDULES), actual=schedule)
    if schedule == "auto":
        return "blocks" if threads > 1 and runtimes > 1 else "interleaved"
    return schedule


def block_size(repeat: int, rounds: int = BLOCK_ROUNDS) -> int:
    """Timed calls per block so that ``repeat`` calls take at most ``rounds`` turns."""
    return max(1, math.ceil(repeat / max(1, rounds)))


def measure(calls: dict[str, Callable[[], object]], repeat: int, *, warmup: int = 0, gap_s: float = 0.0,
            schedule: str = "interleaved", block: int | None = None, settle_s: float = SETTLE_S,
            clock: Callable[[], float] = time.perf_counter,
            sleep: Callable[[float], None] = time.sleep) -> dict[str, list[float]]:
    """Per-call seconds of each callable, ``repeat`` each, the runtimes taking turns.

    ``interleaved``: repetition ``r`` calls every runtime once, starting at the ``r``-th
    (rotating), so no runtime always runs right after the same other one. ``blocks``: a turn is
    ``settle_s`` of idle time, ``BLOCK_WARMUP`` untimed calls, then ``block`` timed calls
    (default ``block_size(repeat)``) of one runtime; turn ``t`` of round ``r`` goes to runtime
    ``(r + t) % len``. ``warmup`` untimed rounds come first. The garbage collector is off while
    timing (as in ``timeit``).
    """
    if repeat < 1:
        raise InputError("repeat must be at least 1", actual=repeat)
    if schedule not in ("interleaved", "blocks"):
        raise InputError(f"unknown schedule {schedule!r}", expected=["interleaved", "blocks"], actual=schedule)
    names = list(calls)
    for _ in range(max(0, warmup)):
        for n in names:
            calls[n]()
    times: dict[str, list[float]] = {n: [] for n in names}

    def timed(n: str) -> None:
        if gap_s > 0:
            sleep(gap_s)
        t0 = clock()
        calls[n]()
        times[n].append(clock() - t0)

    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        if schedule == "interleaved":
            for r in range(repeat):
                for k in range(len(names)):
                    timed(names[(r + k) % len(names)])
        else:
            size = block_size(repeat) if block is None else max(1, int(block))
            r = 0
            while len(times[names[0]]) < repeat:
                for k in range(len(names)):
                    n = names[(r + k) % len(names)]
                    if settle_s > 0:
                        sleep(settle_s)
                    for _ in range(BLOCK_WARMUP):
                        calls[n]()
                    for _ in range(min(size, repeat - len(times[n]))):
                        timed(n)
                r += 1
    finally:
        if gc_was_on:
            gc.enable()
    return times


def summarize(times_s: Iterable[float]) -> dict[str, float]:
    """``median_ms``, ``p10_ms``, ``p90_ms`` of per-call times given in seconds."""
    ms = np.asarray(list(times_s), dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no times to summarize")
    return {"median_ms": float(statistics.median(ms.tolist())),
            "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90))}


def choose_repeat(round_s: float, budget_s: float = DEFAULT_BUDGET_S) -> int:
    """Repetitions so that the timed rounds take about ``budget_s`` (within MIN/MAX_REPEAT)."""
    if not round_s > 0:
        return MAX_REPEAT
    return int(min(MAX_REPEAT, max(MIN_REPEAT, math.ceil(budget_s / round_s))))


# ---- output check -------------------------------------------------------------------------------

def output_errors(ours: list, ref: list) -> list[tuple[float, float]]:
    """Per output ``(max abs error, max |ref|)``; non-finite values in the same places count as
    equal, anywhere else (and a shape or count mismatch) as an infinite error."""
    if len(ours) != len(ref):
        return [(math.inf, 0.0)]
    out = []
    for a, b in zip(ours, ref):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            out.append((math.inf, 0.0))
            continue
        if a.size == 0:
            out.append((0.0, 0.0))
            continue
        if a.dtype.kind not in "biufc" or b.dtype.kind not in "biufc":   # strings, objects: exact
            out.append((0.0 if np.array_equal(a, b) else math.inf, 0.0))
            continue
        wide = np.complex128 if "c" in (a.dtype.kind, b.dtype.kind) else np.float64
        af, bf = a.astype(wide), b.astype(wide)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(af - bf)
        same = (np.isnan(af) & np.isnan(bf)) | (np.isinf(af) & (af == bf))
        diff = np.where(same, 0.0, np.where(np.isfinite(diff), diff, math.inf))
        fin = np.abs(bf[np.isfinite(bf)])
        out.append((float(diff.max()), float(fin.max()) if fin.size else 0.0))
    return out


def error_summary(ours: list, ref: list, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> dict:
    """``max_abs_err``, ``max_rel_err`` (abs error over the output's largest magnitude) and
    ``match`` (every output within ``atol + rtol * max|ref|``)."""
    errs = output_errors(ours, ref)
    max_abs = max(e for e, _ in errs)
    rels = [0.0 if e == 0 else (e / s if s > 0 else math.inf) for e, s in errs]
    match = all(e <= atol + rtol * s for e, s in errs)
    return {"max_abs_err": max_abs, "max_rel_err": max(rels), "match": bool(match)}


# ---- thread settings ----------------------------------------------------------------------------

def _openblas_functions():
    """(get, set) of numpy's bundled OpenBLAS thread count, or None for another BLAS."""
    libdir = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)   # already loaded by numpy: this returns the same library
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                               ("openblas", "")):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                put.argtypes = [ctypes.c_int]
                return get, put
    return None


def set_blas_threads(n: int) -> bool:
    """Limit numpy's OpenBLAS to ``n`` threads for the rest of the process; False when numpy
    does not use a bundled OpenBLAS (the setting is then left alone)."""
    fns = _openblas_functions()
    if fns is None:
        return False
    fns[1](int(n))
    return True


@contextlib.contextmanager
def blas_threads(n: int):
    """numpy's OpenBLAS limited to ``n`` threads inside the block; yields whether it could be set."""
    fns = _openblas_functions()
    if fns is None:
        yield False
        return
    get, put = fns
    before = get()
    put(int(n))
    try:
        yield True
    finally:
        put(before)


@contextlib.contextmanager
def _cold_cache(cold: bool):
    """An empty compile cache (a fresh IRGRAPH_CACHE_DIR) inside the block when ``cold``."""
    if not cold:
        yield
        return
    before = os.environ.get("IRGRAPH_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="irgraph-bench-cache-") as d:
        os.environ["IRGRAPH_CACHE_DIR"] = d
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("IRGRAPH_CACHE_DIR", None)
            else:
                os.environ["IRGRAPH_CACHE_DIR"] = before


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# ---- the model ----------------------------------------------------------------------------------

def bind_dims(proto, dims: dict[str, int] | None):
    """``(proto, bound)``: a copy of the ONNX model whose graph inputs have the static sizes
    ``dims`` (every other symbolic or unnamed input dim: 1), and the symbol -> size binding
    used; the model itself when its inputs are all static. Outputs and value_info that name the
    same symbols get the sizes too."""
    import onnx
    dims = dict(dims or {})
    init = {t.name for t in proto.graph.initializer}
    symbols: list[str] = []
    unnamed = False
    for vi in proto.graph.input:
        if vi.name in init or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            raise InputError("input has unknown rank: cannot make inputs for it", input=vi.name)
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                continue
            if d.dim_param:
                if d.dim_param not in symbols:
                    symbols.append(d.dim_param)
            else:
                unnamed = True
    unknown = sorted(set(dims) - set(symbols))
    if unknown:
        raise InputError(f"--dim {unknown[0]}: no model input has a dimension named {unknown[0]!r}",
                         expected=", ".join(symbols) if symbols else "none (every input dim is static)")
    if not symbols and not unnamed:
        return proto, {}
    bound = {s: int(dims.get(s, 1)) for s in symbols}
    for s, n in bound.items():
        if n < 1:
            raise InputError(f"--dim {s}={n}: sizes must be at least 1")
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for vi in out.graph.input:
        if vi.name in init or not vi.type.HasField("tensor_type"):
            continue
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                size = bound.get(d.dim_param, 1)
                d.dim_value = size      # setting the value clears dim_param (a oneof)
    for vi in list(out.graph.output) + list(out.graph.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param in bound:
                    d.dim_value = bound[d.dim_param]
    return out, bound


def _has_external_data(proto) -> bool:
    import onnx
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def _label(model) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    if isinstance(model, Graph):
        return model.name
    graph = getattr(model, "graph", None)
    return getattr(graph, "name", None) or type(model).__name__


# ---- runtimes -----------------------------------------------------------------------------------

@dataclass
class _Runtime:
    name: str
    call: Callable[[], list]          # one run on the benchmark's inputs, returns the outputs
    setup_s: float
    output_names: list[str]
    note: str = ""


def compile_with_threads(graph, target: str, opt_level, threads: int, options: dict | None = None):
    """``(compiled, seconds, threads passed?)``: ``irgraph.compile`` with ``num_threads=threads``
    for targets that take it (tried, and remembered when the target refuses it)."""
    from .api import compile as compile_model
    opts = dict(options or {})
    if target not in _THREADLESS_TARGETS and "num_threads" not in opts:
        try:
            t0 = time.perf_counter()
            m = compile_model(graph, target=target, opt_level=opt_level, num_threads=threads, **opts)
            return m, time.perf_counter() - t0, True
        except CompileError as e:
            if "num_threads" not in str(e):
                raise
            _THREADLESS_TARGETS.add(target)
    t0 = time.perf_counter()
    m = compile_model(graph, target=target, opt_level=opt_level, **opts)
    return m, time.perf_counter() - t0, "num_threads" in opts


def _irgraph_runtime(name: str, compiled, arrays: list, setup_s: float, note: str = "") -> _Runtime:
    run = compiled.run
    return _Runtime(name, lambda: run(*arrays), setup_s, list(compiled.output_names), note)


def _onnxruntime_runtime(source, threads: int, feeds: dict) -> _Runtime:
    try:
        import onnxruntime as ort
    except ImportError:
        raise IrgraphError("the onnxruntime peer needs the onnxruntime package, which is not installed",
                           hint="pip install onnxruntime (it is in irgraph's dev extra)") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3      # its warnings would interleave with our table
    t0 = time.perf_counter()
    try:
        sess = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types, messages over lines
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise IrgraphError(f"onnxruntime cannot load the model: {first}") from None
    setup_s = time.perf_counter() - t0
    names = [i.name for i in sess.get_inputs()]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise IrgraphError(f"onnxruntime expects input(s) {missing} that irgraph's model does not have",
                           expected=sorted(feeds), actual=names)
    ort_feeds = {n: feeds[n] for n in names}
    return _Runtime(ONNXRUNTIME, lambda: sess.run(None, ort_feeds), setup_s,
                    [o.name for o in sess.get_outputs()])


def _align(outs: list, names: list[str], want: list[str]) -> list:
    """A peer's outputs in irgraph's output order (by name, else by position)."""
    if sorted(names) == sorted(want) and len(set(names)) == len(names):
        by = dict(zip(names, outs))
        return [by[n] for n in want]
    return list(outs)


def parse_peers(compare) -> list[str]:
    """Peer names from ``"onnxruntime,numpy"`` or a list of such strings, checked."""
    from .targets import target_names
    if compare is None:
        return []
    items = [compare] if isinstance(compare, str) else list(compare)
    peers: list[str] = []
    for it in items:
        for p in str(it).split(","):
            p = p.strip()
            if not p:
                continue
            if p not in (ONNXRUNTIME, NUMPY) and p not in target_names():
                raise InputError(f"unknown peer {p!r} for --compare",
                                 expected=", ".join([ONNXRUNTIME, NUMPY] + [f"{t} (irgraph target)"
                                                                             for t in target_names()]),
                                 actual=p)
            if p == IRGRAPH:
                raise InputError("'irgraph' is the measured runtime, not a peer")
            if p not in peers:
                peers.append(p)
    return peers


# ---- the result ---------------------------------------------------------------------------------

@dataclass
class BenchResult:
    model: str
    target: str
    opt_level: int | None
    threads: int
    dims: dict
    inputs: dict                   # name -> type text
    compile_s: float               # ONNX import + irgraph.compile (passes, code generation)
    import_s: float
    first_run_s: float             # irgraph's first call (includes any lazy specialization)
    peak_arena_bytes: int | None
    warmup: int
    repeat: int
    gap_s: float
    rtol: float
    atol: float
    runtimes: dict = field(default_factory=dict)   # name -> {median_ms, p10_ms, p90_ms, setup_s}
    errors: dict = field(default_factory=dict)     # peer -> {max_abs_err, max_rel_err, match}
    notes: list = field(default_factory=list)
    schedule: str = "interleaved"                  # how the runtimes took turns (see measure)
    block: int = 0                                 # timed calls per block (blocks schedule)

    @property
    def peers(self) -> list[str]:
        return [n for n in self.runtimes if n != IRGRAPH]

    @property
    def ratio_vs(self) -> dict[str, float]:
        """irgraph's median over each peer's: above 1, irgraph is slower."""
        ours = self.runtimes[IRGRAPH]["median_ms"]
        return {p: ours / self.runtimes[p]["median_ms"] if self.runtimes[p]["median_ms"] > 0 else math.inf
                for p in self.peers}

    @property
    def outputs_match(self) -> bool:
        return all(e["match"] for e in self.errors.values())

    @property
    def max_abs_err(self) -> float | None:
        return max((e["max_abs_err"] for e in self.errors.values()), default=None)

    @property
    def max_rel_err(self) -> float | None:
        return max((e["max_rel_err"] for e in self.errors.values()), default=None)

    def mismatch_message(self) -> str:
        bad = [p for p, e in self.errors.items() if not e["match"]]
        return "; ".join(f"irgraph's outputs differ from {p}'s: max abs err {_g(self.errors[p]['max_abs_err'])}, "
                         f"max rel err {_g(self.errors[p]['max_rel_err'])} (tolerance atol {self.atol:g} + "
                         f"rtol {self.rtol:g} * max|{p}|)" for p in bad)

    def to_dict(self) -> dict:
        """The ``--json`` document. Non-finite errors (NaN/inf where the peer has none, shape
        mismatches) are null, with ``outputs_match`` false."""
        return {
            "model": self.model, "target": self.target, "opt_level": self.opt_level,
            "threads": self.threads, "dims": dict(self.dims), "inputs": dict(self.inputs),
            "runtimes": {n: {k: float(v) for k, v in r.items()} for n, r in self.runtimes.items()},
            "ratio_vs": {p: _finite(r) for p, r in self.ratio_vs.items()},
            "compile_s": self.compile_s, "import_s": self.import_s, "first_run_s": self.first_run_s,
            "peak_arena_bytes": self.peak_arena_bytes,
            "max_abs_err": _finite(self.max_abs_err), "max_rel_err": _finite(self.max_rel_err),
            "errors": {p: {"max_abs_err": _finite(e["max_abs_err"]), "max_rel_err": _finite(e["max_rel_err"]),
                           "match": e["match"]} for p, e in self.errors.items()},
            "outputs_match": self.outputs_match, "rtol": self.rtol, "atol": self.atol,
            "warmup": self.warmup, "repeat": self.repeat, "gap_s": self.gap_s, "schedule": self.schedule,
            "block": self.block, "notes": list(self.notes),
        }

    def format(self) -> str:
        """The side-by-side table ``irgraph bench`` prints."""
        level = "" if self.opt_level is None else f" -O{self.opt_level}"
        sig = ", ".join(f"{n}: {t}" for n, t in self.inputs.items())
        lines = [f"{self.model}: target {self.target}{level}, {self.threads} thread"
                 f"{'s' if self.threads != 1 else ''}, inputs {sig}"]
        arena = "none planned" if self.peak_arena_bytes is None else f"{self.peak_arena_bytes:,} bytes"
        lines.append(f"compile {self.compile_s:.3f} s (ONNX import {self.import_s:.3f} s), first run "
                     f"{self.first_run_s * 1e3:.3f} ms, peak arena {arena}")
        rows = [("runtime", "median ms", "p10 ms", "p90 ms", "irgraph/peer")]
        ratios = self.ratio_vs
        for n, r in self.runtimes.items():
            label = f"irgraph ({self.target})" if n == IRGRAPH else n
            ratio = "" if n == IRGRAPH else f"{ratios[n]:.2f}x"
            rows.append((label, f"{r['median_ms']:.4g}", f"{r['p10_ms']:.4g}", f"{r['p90_ms']:.4g}", ratio))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
            lines.append("  ".join(cells).rstrip())
        for p, e in self.errors.items():
            verdict = "ok" if e["match"] else "MISMATCH"
            lines.append(f"outputs vs {p}: max abs err {_g(e['max_abs_err'])}, max rel err "
                         f"{_g(e['max_rel_err'])} ({verdict})")
        gap = f", {self.gap_s:g} s idle before each call" if self.gap_s else ""
        rounds = f"after {self.warmup} warm-up round{'s' if self.warmup != 1 else ''}"
        if self.schedule == "blocks":
            lines.append(f"{self.repeat} timed calls per runtime in turns of {self.block} (each turn after "
                         f"{SETTLE_S:g} s idle and {BLOCK_WARMUP} untimed calls) {rounds}{gap}")
        else:
            lines.append(f"{self.repeat} interleaved repetitions {rounds}{gap}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _g(x) -> str:
    return "inf" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _finite(x):
    return None if x is None or not math.isfinite(x) else float(x)


# ---- the benchmark ------------------------------------------------------------------------------

def bench(model, target: str | None = None, *, compare=None, threads: int | None = None,
          opt_level: int | None = None, dims: dict[str, int] | None = None, warmup: int = DEFAULT_WARMUP,
          repeat: int | None = None, seed: int = 0, gap_s: float = 0.0, budget_s: float = DEFAULT_BUDGET_S,
          rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL, cold: bool = False,
          options: dict | None = None, schedule: str = "auto") -> BenchResult:
    """Compile ``model`` for ``target`` and time it against the ``compare`` peers (see the module
    docstring). ``model``: an ONNX path, bytes or ModelProto (or an irgraph Graph, without the
    onnxruntime peer). ``target`` defaults to ``cpu`` when registered. ``repeat`` None picks
    about ``budget_s`` seconds of repetitions. ``cold`` compiles with an empty compile cache.
    ``options`` go to ``irgraph.compile``. ``schedule``: auto, interleaved or blocks (see
    ``measure``; auto is blocks at more than one thread)."""
    from .random_inputs import random_inputs
    from .targets import get_target, target_names

    if target is None:
        target = "cpu" if "cpu" in target_names() else "interp"
    get_target(target)          # unknown target: the one-line error before any work
    peers = parse_peers(compare)
    if target in peers:
        raise InputError(f"--compare {target}: that is the measured target itself")
    threads = default_threads() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError("threads must be at least 1", actual=threads)
    if warmup < 0:
        raise InputError("warmup must be 0 or more", actual=warmup)
    if repeat is not None and repeat < 1:
        raise InputError("repeat must be at least 1", actual=repeat)
    if gap_s < 0:
        raise InputError("gap must be 0 or more seconds", actual=gap_s)
    schedule = resolve_schedule(schedule, threads, 1 + len(peers))

    notes: list[str] = []
    ort_source = None
    if isinstance(model, Graph):
        if ONNXRUNTIME in peers:
            raise InputError("the onnxruntime peer needs an ONNX model",
                             hint="give the model as an ONNX file, bytes or onnx.ModelProto")
        graph, bound, import_s, bdir = model, dict(dims or {}), 0.0, None
        unknown = sorted(set(bound) - {d for v in graph.inputs for d in (v.type.shape or ())
                                        if not isinstance(d, int)})
        if unknown:
            raise InputError(f"--dim {unknown[0]}: no model input has a dimension named {unknown[0]!r}")
    else:
        from .frontends.onnx.importer import import_model
        from .frontends.onnx.load import load_model
        proto, bdir = load_model(model)
        proto, bound = bind_dims(proto, dims)
        if ONNXRUNTIME in peers:
            if _has_external_data(proto):
                if not bound and isinstance(model, (str, os.PathLike)):
                    ort_source = os.fspath(model)      # onnxruntime finds the data files itself
                else:
                    import onnx
                    from onnx.external_data_helper import load_external_data_for_model
                    full = onnx.ModelProto()
                    full.CopyFrom(proto)
                    load_external_data_for_model(full, os.fspath(bdir or "."))
                    ort_source = full.SerializeToString()
            else:
                ort_source = proto.SerializeToString()
        t0 = time.perf_counter()
        graph = import_model(proto, base_dir=bdir)
        import_s = time.perf_counter() - t0

    with blas_threads(threads) as blas_set, _cold_cache(cold):
        if not blas_set:
            notes.append("numpy's BLAS thread count could not be set (not OpenBLAS)")
        compiled, c_s, threads_passed = compile_with_threads(graph, target, opt_level, threads, options or {})
        if not threads_passed:
            notes.append(f"target {target} takes no num_threads (its numpy BLAS calls use {threads})")
        types = dict(zip(compiled.input_names, compiled.input_types))
        feeds = random_inputs(types, seed=seed, dims=bound)
        arrays = [feeds[n] for n in compiled.input_names]
        runtimes = [_irgraph_runtime(IRGRAPH, compiled, arrays, import_s + c_s)]
        for p in peers:
            if p == ONNXRUNTIME:
                runtimes.append(_onnxruntime_runtime(ort_source, threads, feeds))
            else:
                peer_target, level = ("interp", 0) if p == NUMPY else (p, None)
                m, s, _ = compile_with_threads(graph, peer_target, level, threads, {})
                runtimes.append(_irgraph_runtime(p, m, [feeds[n] for n in m.input_names], s))

        # first calls: outputs to check, and the cost of any lazy compilation
        first: dict[str, float] = {}
        outputs: dict[str, list] = {}
        for r in runtimes:
            t0 = time.perf_counter()
            outs = r.call()
            first[r.name] = time.perf_counter() - t0
            outputs[r.name] = [np.array(o, copy=True) for o in outs]
        errors = {}
        ours = outputs[IRGRAPH]
        for r in runtimes[1:]:
            errors[r.name] = error_summary(ours, _align(outputs[r.name], r.output_names,
                                                        runtimes[0].output_names), rtol, atol)

        calls = {r.name: r.call for r in runtimes}
        last = dict(first)
        for _ in range(warmup):
            for r in runtimes:
                t0 = time.perf_counter()
                r.call()
                last[r.name] = time.perf_counter() - t0
        if repeat is None:
            repeat = choose_repeat(sum(last.values()) + gap_s * len(runtimes), budget_s)
        block = block_size(repeat) if schedule == "blocks" else 0
        times = measure(calls, repeat, gap_s=gap_s, schedule=schedule, block=block or None)

    return BenchResult(
        model=_label(model), target=target, opt_level=getattr(compiled, "opt_level", opt_level),
        threads=threads, dims=bound, inputs={n: repr(TensorType.of(feeds[n])) for n in types},
        compile_s=import_s + c_s, import_s=import_s, first_run_s=first[IRGRAPH],
        peak_arena_bytes=peak_arena_bytes(compiled, bound), warmup=warmup, repeat=repeat, gap_s=gap_s,
        rtol=rtol, atol=atol,
        runtimes={r.name: {**summarize(times[r.name]), "setup_s": r.setup_s} for r in runtimes},
        errors=errors, notes=notes, schedule=schedule, block=block)


def peak_arena_bytes(compiled, dims: dict | None = None) -> int | None:
    """``peak_bytes`` of the memory plan on the compiled model's graph (None without one),
    re-planned when the plan was made for other sizes of the graph's symbolic dims."""
    plan = compiled.graph.meta.get("memory_plan")
    if not isinstance(plan, dict) or "peak_bytes" not in plan:
        return None
    planned = dict(plan.get("dims") or {})
    want = {s: int((dims or {}).get(s, 1)) for s in planned}
    if planned != want:
        from irgraph.passes.plan_memory import build_plan
        plan = build_plan(compiled.graph, want)
    return int(plan["peak_bytes"])


def time_interleaved(calls: dict[str, Callable[[], object]], *, warmup: int = 3, repeat: int | None = None,
                     budget_s: float = DEFAULT_BUDGET_S) -> tuple[dict[str, list[float]], int]:
    """Warm the callables up, size ``repeat`` from one timed round (``choose_repeat``) unless given,
    and ``measure`` them interleaved: ``(per-call seconds by name, repeat)``."""
    for _ in range(max(0, warmup)):
        for c in calls.values():
            c()
    if repeat is None:
        t0 = time.perf_counter()
        for c in calls.values():
            c()
        repeat = choose_repeat(time.perf_counter() - t0, budget_s)
    return measure(calls, repeat), repeat


def bench_variant(graph, options: dict, *, names=("variant", "base"), opt_level=None,
                  threads: int | None = None, dims: dict | None = None, warmup: int = 3,
                  repeat: int | None = None, seed: int = 0) -> dict:
    """``graph`` compiled for cpu with ``options`` (quantize=, prune=, ...) and without, timed
    interleaved in one process on the same seeded inputs: ``{"threads", "repeat", "compile_s",
    "runtimes" (summaries by name), "outputs" ({name: (variant outs, base outs)} per model),
    "models"}`` — what ``irgraph bench --quantize/--prune`` compare."""
    from .random_inputs import random_inputs
    threads = default_threads() if threads is None else threads
    vname, bname = names
    with blas_threads(threads):
        v, v_s, _ = compile_with_threads(graph, "cpu", opt_level, threads, options)
        b, b_s, _ = compile_with_threads(graph, "cpu", opt_level, threads, {})
        feeds = random_inputs(dict(zip(b.input_names, b.input_types)), seed=seed, dims=dims or {})
        args = [feeds[n] for n in b.input_names]
        outs_v, outs_b = v.run(*args), b.run(*args)
        times, repeat = time_interleaved({vname: lambda: v.run(*args), bname: lambda: b.run(*args)},
                                         warmup=warmup, repeat=repeat)
    return {"threads": threads, "repeat": repeat, "compile_s": {vname: v_s, bname: b_s},
            "runtimes": {k: summarize(t) for k, t in times.items()},
            "outputs": list(zip(b.output_names, outs_v, outs_b)), "models": (v, b)}
