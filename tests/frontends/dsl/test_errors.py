"""Mistakes a user can make while writing a DSL model, each an IrgraphError naming the op,
argument or layer, raised at the line that made it."""
from __future__ import annotations

import traceback

import numpy as np
import pytest

import irgraph
from irgraph.errors import IrgraphError, ShapeError
from irgraph.frontends import dsl
from irgraph.frontends.dsl import functional as F


def test_wrong_number_of_inputs_names_the_function():
    with dsl.Tracer() as t:
        x = t.input("x", (1, 3, 4, 4))
        with pytest.raises(IrgraphError, match=r"F\.conv takes 2 to 3 inputs.*op conv|op conv.*F\.conv takes 2 to 3"):
            F.conv(x)
        with pytest.raises(IrgraphError, match="F.add takes 2 inputs"):
            F.add(x)


def test_unknown_or_badly_typed_attributes():
    with dsl.Tracer() as t:
        x = t.input("x", (1, 3, 4, 4))
        w = t.constant(np.ones((2, 3, 3, 3), np.float32))
        with pytest.raises(ShapeError, match="unknown attribute 'stride'.*strides"):
            F.conv(x, w, stride=(1, 1))
        with pytest.raises(ShapeError, match="attribute 'strides' must be of kind ints"):
            F.conv(x, w, strides="two")
        with pytest.raises(ShapeError, match="missing required attribute 'kernel_shape'"):
            F.max_pool(x)
        with pytest.raises(IrgraphError, match="input '1'.*cannot use a str"):
            F.add(x, "one")


def test_shape_errors_surface_at_the_users_line():
    with dsl.Tracer() as t:
        x = t.input("x", (None, 3))
        w = t.constant(np.ones((4, 2), np.float32))
        try:
            x @ w  # <- this line
        except ShapeError as e:
            assert "op matmul" in str(e)
            frames = traceback.extract_tb(e.__traceback__)
            assert frames[0].name == "test_shape_errors_surface_at_the_users_line"
            assert "x @ w" in frames[0].line
        else:
            pytest.fail("matmul of (batch, 3) by (4, 2) traced")


def test_layer_errors():
    m = dsl.Sequential(dsl.Dense(3, in_features=4))
    with pytest.raises(ShapeError, match="op matmul"):
        m.to_graph([(None, 5)])
    with pytest.raises(IrgraphError, match="Dense needs the static size of the input's last axis"):
        dsl.Dense(3).to_graph([(None, None)])
    with pytest.raises(IrgraphError, match="Conv2D: 5 filters do not split into 2 groups"):
        dsl.Conv2D(5, 3, groups=2)
    with pytest.raises(IrgraphError, match="embed_dim 6 is not a multiple of num_heads 4"):
        dsl.MultiHeadAttention(6, 4)
    with pytest.raises(IrgraphError, match="unknown activation 'relux'"):
        dsl.Dense(2, activation="relux")
    with pytest.raises(IrgraphError, match="unknown initializer 'glorot'"):
        dsl.Dense(2, kernel_init="glorot", in_features=2)
    with pytest.raises(IrgraphError, match="Dropout rate"):
        dsl.Dropout(1.5)
    with pytest.raises(IrgraphError, match="Sequential holds Modules"):
        dsl.Sequential(dsl.ReLU(), np.ones(3))


def test_tensors_from_another_or_a_finished_trace():
    with dsl.Tracer() as t1:
        a = t1.input("a", (2,))
    with pytest.raises(IrgraphError, match="used after its trace ended"):
        F.relu(a)
    with dsl.Tracer():
        with pytest.raises(IrgraphError, match="belongs to another trace"):
            F.relu(a)
    # outside any trace, parameters and arrays compute eagerly instead
    np.testing.assert_array_equal(dsl.Parameter((2,)) + 1, [1.0, 1.0])


def test_tensors_have_no_truth_value_and_are_immutable():
    with dsl.Tracer() as t:
        x = t.input("x", (3,))
        with pytest.raises(IrgraphError, match="no truth value.*F.where"):
            if x > 0:
                pass
        with pytest.raises(IrgraphError, match="immutable"):
            x[0] = 1.0
        with pytest.raises(IrgraphError, match="too many indices"):
            x[0, 0]
        with pytest.raises(IrgraphError, match="out of range"):
            x[3]
        with pytest.raises(IrgraphError, match="mixing integer and array indices"):
            t.input("y", (2, 3))[0, [1, 2]]


def test_bad_specs_and_options():
    with pytest.raises(IrgraphError, match="cannot read the input spec"):
        dsl.Dense(2).to_graph([(2, 3.5)])
    with pytest.raises(IrgraphError, match="input specs are needed"):
        dsl.Dense(2).to_graph()
    with pytest.raises(IrgraphError, match="params must be one of"):
        dsl.Dense(2).to_graph([(1, 2)], params="weights")
    with pytest.raises(IrgraphError, match="unknown dtype 'float33'"):
        dsl.Dense(2).to_graph([((1, 2), "float33")])
    with pytest.raises(IrgraphError, match="two inputs are named 'x'"):
        dsl.trace(lambda a, b: a + b, [dsl.InputSpec((2,), name="x"), dsl.InputSpec((2,), name="x")])


def test_compile_protocol_errors():
    with pytest.raises(IrgraphError, match="input specs are needed"):
        irgraph.compile(dsl.Dense(2))
    with pytest.raises(IrgraphError, match="input_specs is only for models traced from Python"):
        irgraph.compile(dsl.Dense(2).to_graph([(None, 3)]), input_specs=[(1, 2)])

    class Bad:
        def __irgraph_graph__(self, input_specs=None):
            return "not a graph"
    with pytest.raises(IrgraphError, match="returned a str"):
        irgraph.compile(Bad())


def test_buffer_updated_twice_in_one_trace():
    bn = dsl.BatchNorm(2)
    twice = dsl.Sequential(bn, bn)
    with pytest.raises(IrgraphError, match="updated twice"):
        twice.to_graph([(4, 2)], training=True)
