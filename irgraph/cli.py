"""The ``irgraph`` command line: show and run models.

Errors are one line on stderr and a non-zero exit; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from .errors import InputError, IrgraphError
from .fileio import write_text
from .version import __version__

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as argparse does, but with our prefix
        self.print_usage(sys.stderr)
        print(f"irgraph: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="irgraph", description="irgraph: a deep-learning compiler and runtime")
    p.add_argument("--version", action="version", version=f"irgraph {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("show", help="print a model's IR, op histogram, parameters and signature; "
                       "with -O2 the optimized IR, fused groups, pass table and memory plan")
    s.add_argument("model", help="ONNX model file or artifact folder (prints its manifest summary + IR)")
    _add_opt_level(s)
    s.add_argument("--json", action="store_true",
                   help="print the summary as one JSON document (with -O: passes, kernels, memory)")
    s.add_argument("--no-ir", action="store_true", help="print only the summary, not the IR text")
    s.add_argument("--stats", action="store_true",
                   help="also print the per-pass table (time, nodes, op changes) and kernel counts")
    s.add_argument("--dump-after", action="append", metavar="PASS|all",
                   help="write the IR after this pass (repeatable, or 'all') as text and ONNX to --dump-dir")
    s.add_argument("--dump-dir", default="irgraph-dump", metavar="DIR",
                   help="folder for --dump-after (default ./irgraph-dump)")
    s.add_argument("--format", choices=("text", "onnx", "dot", "svg"), default="text",
                   help="text (default); onnx writes the optimized graph to -o; dot/svg draw it with "
                        "fused groups as clusters (svg needs graphviz's dot)")
    s.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE",
                   help="size of a symbolic dimension for the memory plan (default 1)")
    s.add_argument("-o", "--out", metavar="FILE",
                   help="write the --format output (or the text/JSON report) to FILE instead of stdout")
    _add_quant_args(s, "print the accuracy report of quantizing the model")
    _add_prune_args(s, "print parameters, bytes and FLOPs before/after pruning (with --stats: the pass table)")

    c = sub.add_parser("compile", help="compile a model into an artifact folder (manifest, .npy weights, "
                       "graph, object code) that 'irgraph run' and irgraph.load read")
    c.add_argument("model", help="ONNX model file")
    c.add_argument("--target", default="cpu", help="cpu (default), cuda, cuda-emulator or interp")
    _add_opt_level(c, default_help="default: the target's, 2 on cpu, 0 on interp")
    c.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE",
                   help="also compile the program for this size of a symbolic dimension now, so the "
                        "artifact holds its object code (other sizes compile when first run)")
    c.add_argument("-o", "--out", required=True, metavar="PATH",
                   help="artifact folder to write, e.g. model.irg (replaced only if it is an artifact)")
    _add_quant_args(c, "quantize conv/matmul layers")
    _add_prune_args(c, "prune conv/matmul layers")

    r = sub.add_parser("run", help="run a model on inputs from a .npz file (or seeded random inputs)")
    r.add_argument("model", help="ONNX model file or artifact folder (irgraph compile -o)")
    r.add_argument("--inputs", help=".npz with one array per model input name (.npy for one input)")
    r.add_argument("--output", help="write the outputs to this .npz, keyed by output name")
    r.add_argument("--target", default=None,
                   help="where to run: interp (default; an artifact runs on the target it was compiled for)")
    r.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    r.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE",
                   help="size of a symbolic input dimension for random inputs (default 1)")
    _add_opt_level(r, default_help="default 0 on interp")
    r.add_argument("--bisect-passes", action="store_true",
                   help="compare the -O<n> outputs with -O0's and name the first pass that changed them "
                        "(exit status 1 when one did)")
    r.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of --bisect-passes (1e-4)")
    r.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance of --bisect-passes (1e-5)")

    b = sub.add_parser("bench", help="time a compiled model against onnxruntime (or other peers) in one "
                       "process: median latency and spread, ratio, compile time, peak arena bytes")
    b.add_argument("model", help="ONNX model file")
    b.add_argument("--target", default=None,
                   help="irgraph target to measure (default cpu when available, else interp)")
    b.add_argument("--compare", action="append", default=[], metavar="PEER[,PEER...]",
                   help="peers to time against: onnxruntime, numpy (the numpy reference interpreter) "
                        "or another irgraph target, e.g. --compare onnxruntime,numpy")
    b.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads for every runtime (default: the cores this process may use)")
    _add_opt_level(b, default_help="default: the target's, 2 on cpu")
    b.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE",
                   help="size of a symbolic input dimension (default 1), bound before compiling")
    b.add_argument("--warmup", type=int, default=3, metavar="K", help="untimed calls of each runtime (3)")
    b.add_argument("--repeat", type=int, default=None, metavar="R",
                   help="timed calls of each runtime (default: about 3 s in all, 7 to 10000)")
    b.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    b.add_argument("--gap", type=float, default=0.0, metavar="SECONDS",
                   help="idle time before each timed call, so no runtime's spinning idle threads "
                        "slow the next one (default 0)")
    b.add_argument("--schedule", choices=["auto", "interleaved", "blocks"], default="auto",
                   help="how the runtimes take turns: one call each (interleaved) or blocks of calls "
                        "after idle time (blocks); auto: blocks at more than one thread, where "
                        "interleaved calls measure the runtimes' spinning thread pools fighting")
    b.add_argument("--rtol", type=float, default=1e-3,
                   help="output check: tolerance relative to the peer output's largest magnitude (1e-3)")
    b.add_argument("--atol", type=float, default=1e-5, help="output check: absolute tolerance (1e-5)")
    b.add_argument("--cold", action="store_true", help="compile with an empty compile cache")
    b.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    _add_quant_args(b, "time the int8 model against irgraph's fp32 build of it, interleaved")
    _add_prune_args(b, "time the pruned model against irgraph's unpruned build of it, interleaved")
    return p


def _add_quant_args(p, what: str) -> None:
    g = p.add_argument_group("quantization", f"--quantize: {what}")
    g.add_argument("--quantize", metavar="int8|dynamic",
                   help="int8: static (needs --calibrate); dynamic: matmul weights, activations at run time")
    g.add_argument("--calibrate", metavar="DATA.npz", help="calibration inputs, one array per input name")
    g.add_argument("--observer", metavar="minmax|percentile|entropy",
                   help="how activation ranges are chosen from the calibration data (default minmax)")
    g.add_argument("--keep-float", metavar="auto|NAMES",
                   help="layers left in float: 'auto' (below a sensitivity threshold) or comma-separated names")


def _add_prune_args(p, what: str) -> None:
    g = p.add_argument_group("pruning", f"--prune: {what}")
    g.add_argument("--prune", metavar="SPEC",
                   help="magnitude:RATIO[:layer|global] (unstructured; CSR kernels past the measured "
                        "crossover) or channels:RATIO[:ALIGN] (structured: whole channels removed; kept "
                        "counts rounded to multiples of ALIGN), 0 <= RATIO < 1")


def _prune_kwargs(args) -> dict:
    return {} if getattr(args, "prune", None) is None else {"prune": args.prune}


def _quant_kwargs(args) -> dict:
    """The quantization options of irgraph.compile from the flags (checked there)."""
    out = {"quantize": args.quantize, "calibrate": args.calibrate, "keep_float": args.keep_float,
           "observer": args.observer}
    return {k: v for k, v in out.items() if v is not None}


def _add_opt_level(p, default_help: str = "default 0: the graph as imported") -> None:
    p.add_argument("-O", dest="opt_level", type=int, default=None, metavar="LEVEL",
                   help=f"optimization level 0-3, e.g. -O2 ({default_help})")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return {"show": cmd_show, "run": cmd_run, "bench": cmd_bench,
                "compile": cmd_compile}[args.command](args)
    except IrgraphError as e:
        if args.debug:
            raise
        print(f"irgraph: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("irgraph: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`irgraph show m.onnx | head`): stop quietly, as Unix tools do
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 141
    except MemoryError:
        print("irgraph: error: out of memory", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # an irgraph bug: still one line, but say so
        if args.debug:
            raise
        print(f"irgraph: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback, "
              "and please report it)", file=sys.stderr)
        return EXIT_INTERNAL


def _load(path: str):
    from .api import to_graph
    return to_graph(path)


def _is_artifact(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "manifest.json"))


def cmd_compile(args) -> int:
    from .api import compile as compile_model
    from .artifact import _check_destination, save
    from .random_inputs import random_inputs
    from pathlib import Path
    _check_destination(Path(args.out))   # before the (slow) compile
    dims = _parse_dims(args.dim)
    model = compile_model(_load(args.model), target=args.target, opt_level=args.opt_level, **_quant_kwargs(args),
                          **_prune_kwargs(args))
    if dims:
        symbols = {d for t in model.input_types for d in (t.shape or ()) if not isinstance(d, int)}
        unknown = sorted(set(dims) - symbols)
        if unknown:
            raise InputError(f"--dim: the model has no symbolic dimension {', '.join(unknown)}",
                             expected=sorted(symbols) or "none", actual=unknown)
        # compile (and keep) the program specialized for these sizes; a program that also depends
        # on input values is compiled by one run on seeded inputs (never needed on a GPU target)
        prepare = getattr(model._run, "prepare", None)
        if prepare is None or not prepare(dims):
            model.run(**random_inputs(dict(zip(model.input_names, model.input_types)), seed=0, dims=dims))
    save(model, args.out)
    print(f"wrote {args.out} (target {model.target}, -O{model.opt_level})")
    if model.quant_report is not None:
        print(model.quant_report.format())
    if model.prune_report is not None:
        print(model.prune_report.format())
    return 0


def _show_artifact(args) -> int:
    from .artifact import load, summary
    from .printer import format_graph
    text = summary(args.model)
    if not args.no_ir:
        text += "\n\n" + format_graph(load(args.model).graph)
    if args.out:
        write_text(args.out, text + "\n")
    else:
        print(text)
    return 0


def cmd_show(args) -> int:
    if _is_artifact(args.model):
        return _show_artifact(args)
    from .summary import format_summary, format_optimized, graph_summary, optimized_summary
    level = args.opt_level or 0
    if args.format == "onnx" and not args.out:
        raise InputError("--format onnx writes a binary file; give it with -o FILE")
    if args.json and args.format in ("dot", "svg") and not args.out:
        raise InputError(f"--json and --format {args.format} would both print to stdout; "
                         f"give the drawing a file with -o FILE")
    if args.out:
        _check_parent(args.out)
    dims = _parse_dims(args.dim)
    g = _load(args.model)
    report = None
    from .passes.quantize_options import QuantOptions
    quant = QuantOptions.parse(g, **_quant_kwargs(args))
    from .passes.prune_options import PruneOptions
    prune = PruneOptions.parse(args.prune)
    if level > 0 or args.dump_after or quant is not None or prune is not None:
        from .api import optimize_graph
        dump = args.dump_after
        if dump and level == 0 and quant is None and prune is None:
            raise InputError("--dump-after needs an optimization level: -O0 runs no passes", hint="add -O2")
        g, report = optimize_graph(g, level, dump_after=dump, dump_dir=args.dump_dir,
                                   options={"plan_memory.dims": dims}, quant=quant, prune=prune)
    written = list(getattr(report, "dumped", []) or [])

    if args.format in ("onnx", "dot", "svg"):
        if args.format == "onnx":
            from .frontends.onnx.exporter import export_model
            export_model(g, args.out)  # atomic
        else:
            from .api import draw
            text = draw(g, args.format)
            if not args.out:
                sys.stdout.write(text)
                return 0
            write_text(args.out, text)
        written.append(args.out)
        if not args.json:
            for f in written:
                print(f"wrote {f}")
            return 0

    if level > 0 or args.stats or args.json:  # JSON always has the same keys, for scripts
        s = optimized_summary(g, report, level)
    else:
        s = graph_summary(g)
    if args.json:
        if written:
            s["files"] = written
        if prune is not None:
            s["prune_report"] = g.meta.get("prune_report")
        text = json.dumps(s, indent=2, default=_json_default) + "\n"
    else:
        body = format_optimized(s, report, stats=args.stats) if "kernels" in s else format_summary(s)
        text = ("" if args.no_ir else str(g) + "\n\n") + body + "\n"
        if quant is not None:
            text += "\n" + _quant_text(g, quant) + "\n"
        if prune is not None:
            text += "\n" + prune.finish(g).format() + "\n"
        if written:
            text += "\n" + "\n".join(f"wrote {f}" for f in written) + "\n"
    if args.out and args.format == "text":
        write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _quant_text(g, quant) -> str:
    from .passes.quant_report import QuantReport
    data = g.meta.get("quant_report")
    if data is None:
        return ("dynamic int8 quantization: activations are quantized at run time; no calibration data, "
                "no accuracy report" if quant.mode == "dynamic" else "int8 quantization: no layer to quantize")
    return QuantReport.from_dict(data).format()


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _check_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"cannot write {path!r}: folder {parent!r} does not exist")


def _parse_dims(items) -> dict[str, int]:
    dims = {}
    for it in items:
        name, sep, val = it.partition("=")
        if not sep or not name or not val.isdigit():
            raise InputError(f"--dim takes NAME=SIZE, got {it!r}")
        dims[name] = int(val)
    return dims


def cmd_run(args) -> int:
    from .api import compile as compile_model
    from .fileio import load_arrays, save_npz
    from .random_inputs import random_inputs
    if args.output:
        _check_parent(args.output)   # before the (slow) compile and run
    if _is_artifact(args.model):
        from .artifact import load
        if args.bisect_passes:
            raise InputError("--bisect-passes needs the ONNX model, not an artifact")
        model = load(args.model)
        if args.target and args.target != model.target:
            raise InputError(f"{args.model} was compiled for target {model.target!r}, not {args.target!r}",
                             hint=f"irgraph compile MODEL --target {args.target} -o OTHER.irg")
        if args.opt_level is not None:
            raise InputError(f"{args.model} is already compiled (at -O{model.opt_level}); -O applies to ONNX models")
        g, level = model.graph, None
    else:
        g = _load(args.model)
        level = args.opt_level
        model = None
    if args.bisect_passes and not level:
        raise InputError("--bisect-passes compares an optimization level with -O0; give one, e.g. -O2")
    try:
        if model is None:
            model = compile_model(g, target=args.target or "interp", opt_level=level)
    except IrgraphError as e:
        if not args.bisect_passes:
            raise
        # a pass failed: the bisection below names it (and says how); run -O0 meanwhile
        del e
        model = compile_model(g, target=args.target or "interp", opt_level=0)
    types = dict(zip(model.input_names, model.input_types))
    if args.inputs:
        arrays = load_arrays(args.inputs)
        if list(arrays) == [""]:
            if len(types) != 1:
                raise InputError(f"a .npy holds one array but the model has {len(types)} inputs "
                                 f"({', '.join(types)})", hint="use a .npz keyed by input name")
            arrays = {next(iter(types)): arrays[""]}
        unknown = sorted(set(arrays) - set(types))
        missing = [n for n in types if n not in arrays]
        if unknown or missing:
            raise InputError(f"{args.inputs}: " + "; ".join(
                ([f"missing inputs {missing}"] if missing else []) + ([f"unknown keys {unknown}"] if unknown else [])),
                expected=list(types), actual=list(arrays))
    else:
        arrays = random_inputs(types, seed=args.seed, dims=_parse_dims(args.dim))
    outs = model.run(**arrays)
    named = dict(zip(model.output_names, outs))
    for name, a in named.items():
        a = np.asarray(a)
        stats = ""
        if a.size and a.dtype.kind in "fiub":
            f = a.astype(np.float64)
            stats = f"  min {f.min():.6g}  max {f.max():.6g}  mean {f.mean():.6g}"
        print(f"{name}: {a.dtype}{list(a.shape)}{stats}")
    if args.output:
        save_npz(args.output, named)
        print(f"wrote {args.output}")
    if args.bisect_passes:
        from .api import bisect_passes
        result = bisect_passes(g, arrays, level, rtol=args.rtol, atol=args.atol)
        print(result.summary())
        return EXIT_ERROR if result.changed else 0
    return 0


def cmd_bench(args) -> int:
    if args.prune is not None:
        return _bench_pruned(args)
    if args.quantize is not None:
        return _bench_quantized(args)
    from .bench import bench
    result = bench(args.model, args.target, compare=args.compare, threads=args.threads,
                   opt_level=args.opt_level, dims=_parse_dims(args.dim), warmup=args.warmup,
                   repeat=args.repeat, seed=args.seed, gap_s=args.gap, rtol=args.rtol, atol=args.atol,
                   cold=args.cold, schedule=args.schedule)
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        print(result.format())
    if not result.outputs_match:   # the figures are printed, but a benchmark of wrong results fails
        print(f"irgraph: error: {result.mismatch_message()}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _bench_pruned(args) -> int:
    from .passes.prune_options import bench_pruned
    if args.compare or args.cold or args.quantize is not None:
        raise InputError("--prune compares the pruned model with irgraph's unpruned build; "
                         "drop --compare/--cold/--quantize")
    res = bench_pruned(args.model, args.prune, threads=args.threads, dims=_parse_dims(args.dim),
                       warmup=args.warmup, repeat=args.repeat, seed=args.seed, opt_level=args.opt_level)
    if args.json:
        _print_variant_json(res, "prune_report")
        return 0
    _print_variant_timing(args.model, res, ("pruned", "dense"), "unpruned")
    for name, d in res["max_abs_diff"].items():
        print(f"  {name}: pruned vs unpruned max abs diff {d:.4g} (pruning changes the function)")
    if res["prune_report"] is not None:
        print(res["prune_report"].format())
    return 0


def _bench_quantized(args) -> int:
    from .passes.quantize_options import bench_quantized
    if args.compare or args.cold:
        raise InputError("--quantize compares the int8 model with irgraph's fp32 build; drop --compare/--cold")
    res = bench_quantized(args.model, _quant_kwargs(args), threads=args.threads, dims=_parse_dims(args.dim),
                          warmup=args.warmup, repeat=args.repeat, seed=args.seed)
    if args.json:
        _print_variant_json(res, "quant_report")
        return 0
    _print_variant_timing(args.model, res, ("int8", "fp32"), "fp32")
    for name, c in res["outputs"].items():
        print(f"  {name}: int8 vs fp32 SQNR {c['sqnr_db']:.1f} dB, max abs diff {c['max_abs_err']:.4g}")
    return 0


def _print_variant_json(res: dict, report_key: str) -> None:
    """``bench --prune/--quantize --json``: the figures, the report object as its dict."""
    res = dict(res)
    rep = res.pop(report_key)
    res[report_key] = rep.to_dict() if rep is not None else None
    sys.stdout.write(json.dumps(res, indent=2, default=_json_default) + "\n")


def _print_variant_timing(model: str, res: dict, names: tuple[str, str], base_label: str) -> None:
    """The two builds ``bench --prune/--quantize`` time (``irgraph.bench.bench_variant``):
    medians, spread and compile time of each, then the variant's speedup over the base."""
    variant, _ = names
    width = max(len(n) for n in names)
    print(f"{model}: {res['threads']} thread(s), {res['repeat']} interleaved runs each")
    for name in names:
        r = res["runtimes"][name]
        print(f"  irgraph {name:<{width}} median {r['median_ms']:.4f} ms  (p10 {r['p10_ms']:.4f}, "
              f"p90 {r['p90_ms']:.4f}); compile {res['compile_s'][name]:.1f} s")
    print(f"  {variant} speedup over {base_label}: {res['speedup']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
