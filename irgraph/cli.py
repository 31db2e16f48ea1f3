"""The ``irgraph`` command line: show and run models.

Errors are one line on stderr and a non-zero exit; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .errors import InputError, IrgraphError
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

    s = sub.add_parser("show", help="print a model's IR, op histogram, parameters and signature")
    s.add_argument("model", help="ONNX model file")
    s.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    s.add_argument("--no-ir", action="store_true", help="print only the summary, not the IR text")

    r = sub.add_parser("run", help="run a model on inputs from a .npz file (or seeded random inputs)")
    r.add_argument("model", help="ONNX model file")
    r.add_argument("--inputs", help=".npz with one array per model input name (.npy for one input)")
    r.add_argument("--output", help="write the outputs to this .npz, keyed by output name")
    r.add_argument("--target", default="interp", help="where to run: interp (default)")
    r.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    r.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE",
                   help="size of a symbolic input dimension for random inputs (default 1)")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return {"show": cmd_show, "run": cmd_run}[args.command](args)
    except IrgraphError as e:
        if args.debug:
            raise
        print(f"irgraph: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("irgraph: interrupted", file=sys.stderr)
        return 130
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


def cmd_show(args) -> int:
    from .summary import format_summary, graph_summary
    g = _load(args.model)
    s = graph_summary(g)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    if not args.no_ir:
        print(str(g))
        print()
    print(format_summary(s))
    return 0


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
        import os
        parent = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(parent):
            raise InputError(f"cannot write {args.output!r}: folder {parent!r} does not exist")
    g = _load(args.model)
    model = compile_model(g, target=args.target)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
