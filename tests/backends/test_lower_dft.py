"""dft lowered natively (backends/lower_dft.py) against the numpy interpreter and numpy's FFT."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph import dtype as dt
from irgraph.backends.lower import lower_node
from irgraph.graph import Graph
from irgraph.types import TensorType


@pytest.fixture(scope="module", autouse=True)
def _private_object_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IRGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("irgraph_cache")))
        yield


@pytest.mark.parametrize("inverse,onesided,cin", [(False, False, 1), (False, False, 2), (False, True, 1),
                                                  (True, False, 2), (True, True, 2)])
@pytest.mark.parametrize("length", [None, 6, 13])
@pytest.mark.parametrize("axis", [1, -2])
@pytest.mark.parametrize("d", [dt.float32, dt.float64])
def test_dft_matches_interpreter(inverse, onesided, cin, length, axis, d):
    rng = np.random.default_rng(cin * 7 + (length or 0))
    shape = (2, 11, 3, cin) if axis == 1 else (2, 3, 11, cin)
    x = rng.standard_normal(shape).astype(d.np)
    g = Graph()
    ins = [g.add_input("x", TensorType(shape, d)),
           g.add_const(np.array(length, np.int64)) if length else None,
           g.add_const(np.array(axis, np.int64))]
    g.set_outputs([g.op("dft", ins, {"inverse": inverse, "onesided": onesided})])
    lower_node(g.nodes[-1])   # native lowering exists
    ref = irgraph.compile(g).run(x)[0]
    got = irgraph.compile(g, target="cpu").run(x)[0]
    assert got.dtype == ref.dtype and got.shape == ref.shape
    tol = 1e-4 if d is dt.float32 else 1e-10
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


def test_forward_dft_equals_numpy_fft():
    x = np.random.default_rng(0).standard_normal((1, 7, 1)).astype(np.float64)
    g = Graph()
    xi = g.add_input("x", TensorType(x.shape, dt.float64))
    g.set_outputs([g.op("dft", [xi], {"inverse": False, "onesided": False})])
    got = irgraph.compile(g, target="cpu").run(x)[0]
    want = np.fft.fft(x[0, :, 0])
    np.testing.assert_allclose(got[0, :, 0] + 1j * got[0, :, 1], want, rtol=1e-12, atol=1e-12)
