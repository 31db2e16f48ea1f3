"""dropout lowered natively where it is deterministic (backends/lower_dropout.py), against the
numpy interpreter; the random case is refused, never approximated."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph import dtype as dt
from irgraph.backends.lower import lower_node
from irgraph.errors import CompileError
from irgraph.graph import Graph
from irgraph.types import TensorType


@pytest.fixture(scope="module", autouse=True)
def _private_object_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IRGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("irgraph_cache")))
        yield


def _graph(shape, training_input: bool, training_const=None, ratio_const=None):
    g = Graph()
    x = g.add_input("x", TensorType(shape, dt.float32))
    r = g.add_const(np.array(ratio_const, np.float32), "r") if ratio_const is not None else \
        g.add_input("r", TensorType((), dt.float32))
    ins = [x, r]
    if training_input:
        ins.append(g.add_input("t", TensorType((), dt.bool_)))
    elif training_const is not None:
        ins.append(g.add_const(np.array(training_const), "t"))
    y, mask = g.op("dropout", ins, {"seed": 0}, num_outputs=2)
    g.set_outputs([y, mask])
    return g


def _check(g, *args):
    ref = irgraph.compile(g).run(*args)
    got = irgraph.compile(g, target="cpu").run(*args)
    for r_, g_ in zip(ref, got):
        assert g_.dtype == r_.dtype and g_.shape == r_.shape
        np.testing.assert_array_equal(g_, r_)
    return got


@pytest.mark.parametrize("shape", [(3, 4, 5), (7,), ()])
def test_zero_ratio_in_training_is_the_identity(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    g = _graph(shape, training_input=True)
    y, mask = _check(g, x, np.float32(0.0), np.bool_(True))
    assert mask.all()


def test_full_ratio_in_training_drops_everything():
    x = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    g = _graph(x.shape, training_input=False, training_const=True, ratio_const=1.0)
    lower_node(g.nodes[-1])   # native lowering exists
    y, mask = _check(g, x)
    assert not mask.any() and not y.any()


def test_not_training_keeps_everything_whatever_the_ratio():
    x = np.random.default_rng(2).standard_normal((2, 9)).astype(np.float32)
    g = _graph(x.shape, training_input=False, training_const=False, ratio_const=0.5)
    lower_node(g.nodes[-1])
    _check(g, x)


def test_training_by_default_with_a_positive_ratio_is_refused():
    """training_mode absent means training (the registry's default): random draws, no lowering."""
    x = np.ones((4, 4), np.float32)
    g = _graph(x.shape, training_input=False, ratio_const=0.5)
    with pytest.raises(CompileError, match="random"):
        irgraph.compile(g, target="cpu").run(x)
