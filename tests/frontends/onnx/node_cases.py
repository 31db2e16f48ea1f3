"""Run ONNX's own node test cases (shipped in the ``onnx`` package) through our backend adapter.

Importable by the tests, and runnable for a summary while developing:

    python tests/frontends/onnx/node_cases.py [--target interp] [--filter SUBSTRING] [--failures]
"""
from __future__ import annotations

import sys
import traceback
import warnings
from collections import Counter

import numpy as np


def load_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases
        return collect_testcases(None)


def case_op(case) -> str:
    """The op a case is about: its name minus the ``test_`` prefix, mapped by its last node."""
    nodes = case.model.graph.node
    return nodes[-1].op_type if len(nodes) == 1 else "expanded:" + case.name


def compare(case, expected, got):
    """ONNX's runner semantics: same count, dtype kind, shape; allclose with the case's tolerances."""
    if len(expected) != len(got):
        raise AssertionError(f"{len(got)} outputs, expected {len(expected)}")
    from onnx import TensorProto, numpy_helper
    for i, (e, g) in enumerate(zip(expected, got)):
        if isinstance(e, TensorProto):
            e = numpy_helper.to_array(e)
        e = np.asarray(e)
        g = np.asarray(g)
        if e.dtype == object or g.dtype == object:
            np.testing.assert_array_equal(e, g, err_msg=f"output {i}")
            continue
        if e.dtype != g.dtype:
            raise AssertionError(f"output {i}: dtype {g.dtype}, expected {e.dtype}")
        if e.shape != g.shape:
            raise AssertionError(f"output {i}: shape {g.shape}, expected {e.shape}")
        if e.dtype.kind in "fc" or e.dtype.kind == "V" or e.dtype.itemsize < 1:
            np.testing.assert_allclose(g.astype(np.float64) if e.dtype.kind not in "fc" else g.astype(e.dtype),
                                       e.astype(np.float64) if e.dtype.kind not in "fc" else e,
                                       rtol=case.rtol, atol=case.atol, err_msg=f"output {i}")
        else:
            try:
                np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), rtol=case.rtol,
                                           atol=case.atol, err_msg=f"output {i}")
            except TypeError:
                np.testing.assert_array_equal(g, e, err_msg=f"output {i}")


def run_case(case, target: str = "interp"):
    """Raises on failure; returns None on success."""
    from irgraph.frontends.onnx import backend
    rep = backend.prepare(case.model, device="CPU", target=target)
    for inputs, outputs in case.data_sets:
        got = rep.run(inputs)
        compare(case, outputs, got)


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="interp")
    ap.add_argument("--filter", default="")
    ap.add_argument("--failures", action="store_true", help="print each failure's message")
    ap.add_argument("--tb", action="store_true", help="print tracebacks")
    args = ap.parse_args(argv)
    cases = [c for c in load_cases() if args.filter in c.name]
    ok, failed = 0, []
    reasons = Counter()
    for c in cases:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                run_case(c, args.target)
            ok += 1
        except Exception as e:  # noqa: BLE001 - a summary tool
            msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            failed.append((c.name, msg))
            reasons[type(e).__name__] += 1
            if args.tb:
                traceback.print_exc()
    if args.failures:
        for name, msg in failed:
            print(f"FAIL {name}: {msg}")
    print(f"{ok} passed, {len(failed)} failed of {len(cases)} ({dict(reasons)})")


if __name__ == "__main__":
    sys.exit(main())
