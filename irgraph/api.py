"""The public entry points: ``irgraph.compile`` and ``irgraph.load_model``.

This is the one core module that reaches into ``irgraph.passes`` (the optimizer sits above the
IR): ``compile(..., opt_level=2)`` runs the ``-O2`` pipeline, and the CLI's ``show -O2``,
``--dump-after``, ``--format dot|svg`` and ``run --bisect-passes`` go through the helpers below.
"""
from __future__ import annotations

import os

from .compiled import CompiledModel
from .errors import IrgraphError
from .graph import Graph
from .targets import get_target

# targets whose backends compile fused groups get -O2 by default; the interpreter stays the
# oracle every optimization level is tested against, so it runs the graph as imported
DEFAULT_OPT_LEVEL = {"interp": 0}
FALLBACK_OPT_LEVEL = 2


def to_graph(model, input_specs=None) -> Graph:
    """A Graph from an ONNX path, bytes, ``onnx.ModelProto`` or a Graph (returned as is), or
    from any object with an ``__irgraph_graph__(input_specs=...)`` method (a DSL model: the
    core finds it by duck typing, never by importing a frontend)."""
    hook = getattr(model, "__irgraph_graph__", None)
    if hook is not None and not isinstance(model, type):
        graph = hook(input_specs=input_specs)
        if not isinstance(graph, Graph):
            raise IrgraphError(f"{type(model).__name__}.__irgraph_graph__ returned a "
                               f"{type(graph).__name__}, not an irgraph.Graph")
        return graph
    if input_specs is not None:
        raise IrgraphError("input_specs is only for models traced from Python (DSL models)",
                           hint="ONNX models and Graphs declare their own inputs")
    if isinstance(model, Graph):
        return model
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a dependency
        raise IrgraphError("the onnx package is needed to read ONNX models") from None
    if isinstance(model, (str, os.PathLike, bytes, bytearray, onnx.ModelProto)):
        from irgraph.frontends.onnx.importer import import_model
        return import_model(model)
    raise IrgraphError(f"cannot compile a {type(model).__name__}",
                       hint="pass an ONNX file path, an onnx.ModelProto or an irgraph.Graph")


def compile(model, target: str = "interp", opt_level: int | None = None, *, input_specs=None,  # noqa: A001
            quantize: str | None = None, calibrate=None, keep_float=None, observer: str | None = None,
            prune: str | None = None, **options) -> CompiledModel:
    """Compile ``model`` for ``target`` and return a callable ``CompiledModel``.

    ``model`` is an ONNX path/bytes/ModelProto, a Graph, or a DSL model with ``input_specs``
    (e.g. ``[(None, 4)]``; see ``irgraph.frontends.dsl.specs``).

    ``opt_level`` (0-3) picks the pass pipeline (see ``irgraph.passes.pipelines``); it defaults
    to 0 for ``interp`` (the reference) and to 2 elsewhere. The optimized graph is
    ``model.graph`` and what each pass did is ``model.pass_report`` (None at level 0); a Graph
    passed in is never modified.

    ``quantize="int8"`` quantizes conv/matmul layers to int8 with activation ranges from
    ``calibrate`` (an .npz path or a dict of arrays; ``observer`` minmax | percentile |
    entropy); ``quantize="dynamic"`` quantizes matmul weights and the activations at run time.
    ``keep_float`` ("auto" or layer names) leaves layers in float. The accuracy report is
    ``model.quant_report`` (see ``irgraph.passes.quant_report``).

    ``prune="magnitude:0.5"`` (``:layer`` default, or ``:global``) zeroes the smallest weights of
    conv/matmul layers, and on ``cpu`` runs layers past the measured crossover with CSR kernels;
    ``prune="channels:0.3"`` removes the weakest conv/matmul output channels and shrinks their
    consumers. Parameters, bytes and FLOPs before/after are ``model.prune_report`` (see
    ``irgraph.passes.prune_report``; ``irgraph.training.prune`` fine-tunes a pruned model).

    >>> m = irgraph.compile("model.onnx")                 # doctest: +SKIP
    >>> y = m(x)                                          # doctest: +SKIP
    >>> m2 = irgraph.compile("model.onnx", opt_level=2)   # doctest: +SKIP
    """
    graph = to_graph(model, input_specs)
    factory = get_target(target)
    level = _check_level(DEFAULT_OPT_LEVEL.get(target, FALLBACK_OPT_LEVEL) if opt_level is None else opt_level)
    from irgraph.passes.quantize_options import QuantOptions
    quant = QuantOptions.parse(graph, quantize, calibrate, keep_float, observer)
    from irgraph.passes.prune_options import PruneOptions
    pruning = PruneOptions.parse(prune)
    report = None
    if level > 0 or quant is not None or pruning is not None:
        graph, report = optimize_graph(graph, level, quant=quant, prune=pruning, target=target)
    runner = factory(graph, **options)
    compiled = CompiledModel(graph, target, runner, options)
    compiled.opt_level = level
    compiled.pass_report = report
    if quant is not None:
        compiled.quant_report = quant.finish(compiled, graph)
    compiled.prune_report = pruning.finish(graph) if pruning is not None else None
    return compiled


def _check_level(level) -> int:
    from .errors import CompileError
    if isinstance(level, bool) or not isinstance(level, int):
        raise CompileError("opt_level must be an integer", expected="0, 1, 2 or 3", actual=repr(level))
    from irgraph.passes.pipelines import PIPELINES
    if level not in PIPELINES:
        raise CompileError(f"unknown optimization level -O{level}",
                           expected=", ".join(map(str, sorted(PIPELINES))), actual=level)
    return level


def optimize_graph(model, opt_level: int = 2, *, dump_after=None, dump_dir: str = "irgraph-dump",
                   verify: bool = False, options: dict | None = None, quant=None, prune=None,
                   target: str | None = None):
    """Run the ``-O<opt_level>`` pipeline on a copy of ``model``'s graph.

    Returns ``(graph, report)`` (report: ``irgraph.passes.PassReport``). ``dump_after`` is a pass
    name, a list of names or ``"all"``: the IR after those passes is written to ``dump_dir``
    as text and ONNX; the files written are listed in ``report.dumped``. ``options`` are pass
    knobs (``PassContext.options``), e.g. ``{"plan_memory.dims": {"N": 8}}``. ``quant``: a
    ``QuantOptions`` (passes/quantize_options.py); quantized ONNX models get ``fold_qdq`` anyway.
    ``prune``: a spec string or ``PruneOptions`` (passes/prune_options.py); ``target`` tells the
    pruning passes whether CSR kernels exist there (None: assume cpu).
    """
    from irgraph.passes import PassContext, optimize, run_passes
    from irgraph.passes.pipelines import pipeline
    from irgraph.passes.quantize_options import plan_passes
    level = _check_level(opt_level)
    names = [getattr(p, "name", p) for p in pipeline(level)]
    model = to_graph(model)
    planned = plan_passes(names, model, quant)
    from irgraph.passes.prune_options import PruneOptions, plan_passes as plan_prune
    prune = PruneOptions.parse(prune)
    planned = plan_prune(planned, prune)
    ctx = PassContext(opt_level=level, verify=verify, options=dict(options or {}))
    if quant is not None:
        ctx.options.update(quant.pass_options())
    if prune is not None:
        ctx.options.update(prune.pass_options(target))
    dump = None
    if dump_after:
        which = dump_after if dump_after == "all" else _dump_names(dump_after, planned, level)
        from irgraph.passes.instruments import DumpIR
        parent = os.path.dirname(os.path.abspath(dump_dir))
        if not os.path.isdir(parent):
            raise IrgraphError(f"cannot write the IR dumps to {dump_dir!r}: folder {parent!r} does not exist")
        dump = DumpIR(dump_dir, passes=which)
        ctx.instruments.append(dump)
    if planned != names:
        graph, report = run_passes(model.copy(), planned, ctx)
        from irgraph.passes.manager import restore_output_names
        restore_output_names(graph, [v.name for v in model.outputs])
    else:
        graph, report = optimize(model, level, ctx)
    report.dumped = list(dump.written) if dump else []
    return graph, report


def _dump_names(dump_after, names: list[str], level: int) -> list[str]:
    wanted = [dump_after] if isinstance(dump_after, str) else list(dump_after)
    if "all" in wanted:
        return "all"
    if not names:
        raise IrgraphError(f"--dump-after: -O{level} runs no passes", hint="use -O1 or higher")
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise IrgraphError(f"--dump-after: {', '.join(map(repr, unknown))} is not a pass of -O{level}",
                           hint="passes: " + ", ".join(dict.fromkeys(names)) + " (or 'all')")
    return wanted


def bisect_passes(model, feeds, opt_level: int = 2, rtol: float = 1e-4, atol: float = 1e-5):
    """The first pass of ``-O<opt_level>`` after which the interpreter's outputs on ``feeds``
    differ from the unoptimized graph's (see ``irgraph.passes.bisect``)."""
    from irgraph.passes.bisect import bisect_passes as _bisect
    return _bisect(to_graph(model), feeds, level=_check_level(opt_level), rtol=rtol, atol=atol)


def draw(graph: Graph, fmt: str = "dot") -> str:
    """The graph as Graphviz text (``dot``) or SVG (``svg``, needs graphviz's ``dot`` program)."""
    from irgraph.passes import draw as _draw
    if fmt == "dot":
        return _draw.to_dot(graph)
    if fmt == "svg":
        return _draw.to_svg(graph)
    raise IrgraphError(f"cannot draw as {fmt!r}", expected="dot or svg", actual=fmt)
