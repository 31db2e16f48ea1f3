"""Shared helpers of the lowering tests: a private object cache per test module, and a one-node
graph run natively on target="cpu" against the numpy interpreter.

    from lowercheck import compare, private_object_cache  # noqa: F401  (the fixture is autouse)
"""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph.backends.lower import lower_node


@pytest.fixture(scope="module", autouse=True)
def private_object_cache(tmp_path_factory):
    """Compiled modules go to a temporary object cache, not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IRGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("irgraph_cache")))
        yield


def compare(g, *args, exact=False, rtol=1e-6, atol=1e-6):
    """The graph's last node lowers natively, and cpu gives the interpreter's outputs (same
    dtypes and shapes; bit-exact with ``exact``). Returns the cpu outputs."""
    lower_node(g.nodes[-1])
    ref = irgraph.compile(g).run(*args)
    got = irgraph.compile(g, target="cpu").run(*args)
    for r, o in zip(ref, got):
        assert o.dtype == r.dtype and o.shape == r.shape
        if exact:
            np.testing.assert_array_equal(o, r)
        else:
            np.testing.assert_allclose(o, r, rtol=rtol, atol=atol)
    return got
