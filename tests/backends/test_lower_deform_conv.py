"""deform_conv lowered natively (backends/lower_deform_conv.py) against the numpy interpreter."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph import dtype as dt
from irgraph.graph import Graph
from irgraph.types import TensorType


from lowercheck import compare as _compare, private_object_cache  # noqa: F401,E402  (autouse fixture)


def _out_size(s, k, st, d, pb, pe):
    return (s + pb + pe - d * (k - 1) - 1) // st + 1


CASES = [  # spatial, kernel, strides, dilations, pads, C, M, group, offset_group, mask, bias
    ((5, 5), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 2, 3, 1, 1, True, True),
    ((7, 6), (2, 3), (2, 1), (1, 2), (0, 1, 1, 0), 4, 6, 2, 2, False, True),
    ((4, 5), (2, 2), (1, 1), (1, 1), (0, 0, 0, 0), 6, 4, 2, 3, True, False),
    ((9,), (3,), (2,), (1,), (1, 1), 3, 2, 1, 3, True, True),
    ((3, 4, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), (0, 1, 0, 0, 0, 1), 2, 2, 1, 1, False, False),
]


@pytest.mark.parametrize("spatial,kernel,strides,dil,pads,C,M,group,og,mask,bias", CASES)
@pytest.mark.parametrize("d", [dt.float32, dt.float64, dt.float16])
def test_deform_conv_matches_interpreter(spatial, kernel, strides, dil, pads, C, M, group, og, mask, bias, d):
    rng = np.random.default_rng(len(spatial) + C + M)
    nsp = len(spatial)
    outs = tuple(_out_size(s, k, st, dl, pads[i], pads[i + nsp])
                 for i, (s, k, st, dl) in enumerate(zip(spatial, kernel, strides, dil)))
    K = int(np.prod(kernel))
    x = rng.standard_normal((2, C) + spatial).astype(d.np)
    w = rng.standard_normal((M, C // group) + kernel).astype(d.np)
    off = rng.uniform(-2.5, 2.5, (2, og * K * nsp) + outs).astype(d.np)   # some taps fall outside
    g = Graph()
    ins = [g.add_input("x", TensorType(x.shape, d)), g.add_input("w", TensorType(w.shape, d)),
           g.add_input("off", TensorType(off.shape, d))]
    args = [x, w, off]
    if bias or mask:
        bv = rng.standard_normal(M).astype(d.np)
        ins.append(g.add_input("b", TensorType(bv.shape, d)) if bias else None)
        if bias:
            args.append(bv)
    if mask:
        mv = rng.uniform(0, 1, (2, og * K) + outs).astype(d.np)
        ins.append(g.add_input("m", TensorType(mv.shape, d)))
        args.append(mv)
    attrs = {"strides": strides, "dilations": dil, "pads": pads, "group": group,
             "offset_group": og}
    g.set_outputs([g.op("deform_conv", ins, attrs)])
    tol = {dt.float16: 2e-2, dt.float32: 1e-5, dt.float64: 1e-12}[d]
    _compare(g, *args, rtol=tol, atol=tol)


def test_deform_conv_with_zero_offsets_is_a_conv():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 6, 5)).astype(np.float64)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float64)
    off = np.zeros((1, 18, 4, 3))
    g = Graph()
    ins = [g.add_input("x", TensorType(x.shape, dt.float64)), g.add_const(w, "w"), g.add_const(off, "off")]
    g.set_outputs([g.op("deform_conv", ins, {})])
    got = irgraph.compile(g, target="cpu").run(x)[0]
    g2 = Graph()
    x2 = g2.add_input("x", TensorType(x.shape, dt.float64))
    g2.set_outputs([g2.op("conv", [x2, g2.add_const(w, "w")], {})])
    np.testing.assert_allclose(got, irgraph.compile(g2).run(x)[0], rtol=1e-12, atol=1e-12)
