"""Gradient rules of the data-movement ops (irgraph/ops/movement.py) against finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case

_rng = np.random.default_rng(3)


def u(*shape):
    return _rng.uniform(-1, 1, size=shape)


def i64(*v):
    return np.array(v, dtype=np.int64)


BIG = 2 ** 31 - 1

GRAD_CASES = {
    "reshape": [case(u(2, 3, 2), i64(3, -1), const=(1,)),
                case(u(2, 3), i64(0, 3, 1), const=(1,), id="copy dim"),
                case(u(2, 3), i64(6), id="runtime shape")],
    "transpose": [case(u(2, 3, 4), attrs={"perm": (1, 2, 0)}), case(u(2, 3, 4), id="reverse")],
    "slice": [
        case(u(4, 5), i64(1), i64(3), const=(1, 2), id="first axis"),
        case(u(4, 5), i64(1, -4), i64(BIG, -1), i64(0, 1), const=(1, 2, 3), id="two axes, clamped"),
        case(u(3, 7), i64(0), i64(BIG), i64(1), i64(2), const=(1, 2, 3, 4), id="step 2"),
        case(u(3, 7), i64(1), i64(6), i64(-1), i64(3), const=(1, 2, 3, 4), id="step 3, interior"),
        case(u(3, 7), i64(-1), i64(-BIG), i64(1), i64(-1), const=(1, 2, 3, 4), id="reversed"),
        case(u(3, 8), i64(6, 2), i64(0, 0), i64(1, 0), i64(-2, -1), const=(1, 2, 3, 4),
             id="negative steps on two axes"),
        case(u(3, 4), i64(2), i64(2), i64(1), const=(1, 2, 3), id="empty"),
        case(u(3, 6), i64(1), i64(5), i64(1), i64(2), id="runtime bounds (scatter)"),
    ],
    "concat": [case(u(2, 3), u(2, 1), u(2, 2), attrs={"axis": 1}),
               case(u(1, 3), u(2, 3), attrs={"axis": -2}, id="negative axis"),
               case(u(2, 3), attrs={"axis": 0}, id="one input")],
    "split": [case(u(4, 3), attrs={"num_outputs": 2}, num_outputs=2),
              case(u(2, 6), i64(1, 2, 3), attrs={"axis": 1}, const=(1,), num_outputs=3, id="sizes"),
              case(u(5, 2), attrs={"num_outputs": 3}, num_outputs=3, id="uneven")],
    "squeeze": [case(u(2, 1, 3, 1), i64(1), const=(1,)), case(u(1, 3, 1), id="all")],
    "unsqueeze": [case(u(2, 3), i64(0, 3), const=(1,))],
    "expand": [case(u(3, 1), i64(2, 3, 4), const=(1,)), case(u(1, 4), i64(3, 1), const=(1,), id="both sides"),
               case(u(3), i64(2, 3), id="runtime shape")],
    "tile": [case(u(2, 3), i64(2, 3), const=(1,)), case(u(2, 3), i64(1, 2), const=(1,), id="one axis"),
             case(u(2, 3), i64(1, 1), const=(1,), id="identity")],
}

_PARAMS = [(op, c) for op, cs in GRAD_CASES.items() for c in cs]


@pytest.mark.parametrize("op,c", _PARAMS, ids=[f"{op}-{c.id or i}" for i, (op, c) in enumerate(_PARAMS)])
def test_gradient_matches_finite_differences(op, c):
    check_case(op, c)


def test_split_output_without_gradient_gets_zeros():
    from irgraph import run_graph
    from irgraph.passes.autodiff import gradients
    from oprun import build
    g, outs, feeds = build("split", [u(4, 2)], {"num_outputs": 2}, num_outputs=2)
    (gv,) = gradients(g, outs[1], [g.inputs[0]])
    g.set_outputs([gv])
    np.testing.assert_array_equal(run_graph(g, feeds)[0], [[0, 0], [0, 0], [1, 1], [1, 1]])


def test_static_slice_gradient_pads_instead_of_scattering():
    from irgraph.passes.autodiff import gradients
    from oprun import build
    g, outs, _ = build("slice", [u(3, 7), i64(1), i64(6), i64(1), i64(2)], const=(1, 2, 3, 4))
    gradients(g, outs[0], [g.inputs[0]])
    ops = {n.op for n in g.nodes}
    assert "pad" in ops and "scatter_elements" not in ops
