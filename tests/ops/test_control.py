"""if / loop / scan: references on bodies built with the Graph API, inference, errors, and the
ONNX frontend's handling of untyped and shape-changing loop bodies."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import irgraph
from irgraph import Graph, ShapeError, TensorType, run_graph
from irgraph.frontends.onnx.importer import import_model

from oprun import onnx_model, value_info

F32, I64, BOOL = irgraph.dtype.float32, irgraph.dtype.int64, irgraph.dtype.bool_


def _is_symbol(d) -> bool:
    return isinstance(d, str)


# ---- if --------------------------------------------------------------------------------------
def _if_graph(then_shape=(3,), else_shape=(3,), else_dtype=np.float32):
    g = Graph()
    c = g.add_input("c", TensorType((), BOOL))
    x = g.add_input("x", TensorType((3,), F32))
    then = Graph("then", parent=g)
    then.set_outputs([then.op("add", [x, x])] if then_shape == (3,) else
                     [then.add_const(np.ones(then_shape, np.float32), "k")])
    other = Graph("else", parent=g)
    other.set_outputs([other.add_const(np.full(else_shape, 7, else_dtype), "seven")])
    return g, c, x, then, other


def test_if_runs_the_selected_branch_and_reads_outer_values():
    g, c, x, then, other = _if_graph()
    (y,) = g.op("if", [c], {"then_branch": then, "else_branch": other})
    g.set_outputs([y])
    g.verify()
    xs = np.array([1.0, 2.0, 3.0], np.float32)
    np.testing.assert_array_equal(run_graph(g, [np.array(True), xs])[0], [2.0, 4.0, 6.0])
    np.testing.assert_array_equal(run_graph(g, [np.array(False), xs])[0], [7.0, 7.0, 7.0])
    assert y.type == TensorType((3,), F32)


def test_if_merges_differing_shapes_into_symbols():
    g, c, x, then, other = _if_graph(then_shape=(2, 5), else_shape=(2, 3))
    (y,) = g.op("if", [c], {"then_branch": then, "else_branch": other})
    assert y.shape[0] == 2 and _is_symbol(y.shape[1])
    g.set_outputs([y])
    assert run_graph(g, [np.array(False), np.zeros(3, np.float32)])[0].shape == (2, 3)
    assert run_graph(g, [np.array(True), np.zeros(3, np.float32)])[0].shape == (2, 5)


def test_if_with_a_known_condition_takes_that_branch_type():
    g, _, x, then, other = _if_graph(then_shape=(2, 5), else_shape=(4,))
    k = g.add_const(np.array(False), "k")
    (y,) = g.op("if", [k], {"then_branch": then, "else_branch": other})
    # without the constant the rank is unknown: the branches disagree on it
    (z,) = g.op("if", [g.add_input("c2", TensorType((), BOOL))], {"then_branch": then, "else_branch": other})
    assert y.type == TensorType((4,), F32)
    assert z.type.shape is None


def test_if_errors():
    g, c, x, then, other = _if_graph(else_dtype=np.int64)
    with pytest.raises(ShapeError, match="dtype") as e:
        g.op("if", [c], {"then_branch": then, "else_branch": other})
    assert "op if" in str(e.value)
    g, c, x, then, other = _if_graph()
    with pytest.raises(ShapeError, match="must be bool"):
        g.op("if", [x], {"then_branch": then, "else_branch": other})
    other.set_outputs([])
    with pytest.raises(ShapeError, match="different numbers of outputs"):
        g.op("if", [c], {"then_branch": then, "else_branch": other})


# ---- loop ------------------------------------------------------------------------------------
def _loop_body(parent: Graph, step: "irgraph.Value", stop_at: int | None = None) -> Graph:
    """(i, cond, acc[3]) -> (cond', acc + step * i, acc as scanned); cond' is i != stop_at."""
    b = Graph("body", parent=parent)
    i = b.add_input("i", TensorType((), I64))
    cond = b.add_input("cond", TensorType((), BOOL))
    acc = b.add_input("acc", TensorType((3,), F32))
    fi = b.op("cast", [i], {"to": F32})
    new = b.op("add", [acc, b.op("mul", [step, fi])])
    if stop_at is not None:
        hit = b.op("equal", [i, b.add_const(np.array(stop_at, np.int64), "stop")])
        cond = b.op("equal", [hit, b.add_const(np.array(False), "no")])
    b.set_outputs([cond, new, acc])
    return b


def test_loop_for_trip_count():
    g = Graph()
    m = g.add_input("m", TensorType((), I64))
    init = g.add_input("init", TensorType((3,), F32))
    step = g.add_input("step", TensorType((3,), F32))
    final, scanned = g.op("loop", [m, None, init], {"body": _loop_body(g, step)})
    g.set_outputs([final, scanned])
    g.verify()
    assert final.type == TensorType((3,), F32)
    assert _is_symbol(scanned.shape[0]) and scanned.shape[1:] == (3,)
    s = np.array([1.0, 10.0, 100.0], np.float32)
    f, sc = run_graph(g, [np.array(4, np.int64), np.zeros(3, np.float32), s])
    np.testing.assert_allclose(f, s * (0 + 1 + 2 + 3))
    np.testing.assert_allclose(sc, [s * 0, s * 0, s * 1, s * 3])  # acc before each step
    f, sc = run_graph(g, [np.array(0, np.int64), np.ones(3, np.float32), s])
    np.testing.assert_array_equal(f, [1, 1, 1])
    assert sc.shape == (0, 3) and sc.dtype == np.float32


def test_loop_while_condition_and_static_trip_count():
    g = Graph()
    init = g.add_input("init", TensorType((3,), F32))
    step = g.add_const(np.ones(3, np.float32), "step")
    go = g.add_input("go", TensorType((), BOOL))
    # while i != 2: runs i = 0, 1, 2 and stops after the step where i == 2
    final, scanned = g.op("loop", [None, go, init], {"body": _loop_body(g, step, stop_at=2)})
    g.set_outputs([final, scanned])
    f, sc = run_graph(g, [np.zeros(3, np.float32), np.array(True)])
    np.testing.assert_allclose(f, [3, 3, 3])
    assert sc.shape == (3, 3)
    f, sc = run_graph(g, [np.zeros(3, np.float32), np.array(False)])
    assert sc.shape == (0, 3) and not f.any()
    # a constant trip count without a condition fixes the scan length
    k = g.add_const(np.array(5, np.int64), "five")
    _, scanned5 = g.op("loop", [k, None, init], {"body": _loop_body(g, step)})
    assert scanned5.shape == (5, 3)


def test_loop_errors():
    g = Graph()
    init = g.add_input("init", TensorType((3,), irgraph.dtype.float64))
    step = g.add_input("step", TensorType((3,), F32))
    m = g.add_input("m", TensorType((), I64))
    with pytest.raises(ShapeError, match="changes dtype") as e:
        g.op("loop", [m, None, init], {"body": _loop_body(g, step)})
    assert "op loop" in str(e.value)
    init32 = g.add_input("init32", TensorType((3,), F32))
    with pytest.raises(ShapeError, match="trip count"):
        g.op("loop", [init32, None, init32], {"body": _loop_body(g, step)})
    with pytest.raises(ShapeError, match="loop-carried"):
        g.op("loop", [m, None, init32, init32], {"body": _loop_body(g, step)})


# ---- scan ------------------------------------------------------------------------------------
def _scan_body(parent: Graph, width=2) -> Graph:
    """(s[w], x[w]) -> (s + x, 2 * (s + x))"""
    b = Graph("body", parent=parent)
    s = b.add_input("s", TensorType((width,), F32))
    x = b.add_input("x", TensorType((width,), F32))
    t = b.op("add", [s, x])
    b.set_outputs([t, b.op("mul", [t, b.add_const(np.array(2.0, np.float32), "two")])])
    return b


def test_scan_running_sum():
    g = Graph()
    s0 = g.add_input("s0", TensorType((2,), F32))
    xs = g.add_input("xs", TensorType(("T", 2), F32))
    final, ys = g.op("scan", [s0, xs], {"body": _scan_body(g), "num_scan_inputs": 1})
    g.set_outputs([final, ys])
    g.verify()
    assert final.type == TensorType((2,), F32) and ys.type == TensorType(("T", 2), F32)
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    f, y = run_graph(g, [np.array([1.0, -1.0], np.float32), x])
    want = np.array([1.0, -1.0]) + np.cumsum(x, axis=0)
    np.testing.assert_allclose(y, 2 * want)
    np.testing.assert_allclose(f, want[-1])


def test_scan_axes_and_directions():
    g = Graph()
    s0 = g.add_input("s0", TensorType((2,), F32))
    xs = g.add_input("xs", TensorType((2, 4), F32))  # scanned along axis 1
    attrs = {"body": _scan_body(g), "num_scan_inputs": 1, "scan_input_axes": [-1],
             "scan_input_directions": [1], "scan_output_axes": [1], "scan_output_directions": [1]}
    final, ys = g.op("scan", [s0, xs], attrs)
    assert ys.shape == (2, 4)
    g.set_outputs([final, ys])
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    f, y = run_graph(g, [np.zeros(2, np.float32), x])
    running = np.cumsum(x[:, ::-1], axis=1)          # steps visit columns 3, 2, 1, 0
    np.testing.assert_allclose(f, running[:, -1])
    np.testing.assert_allclose(y, 2 * running[:, ::-1])  # stacked in reverse step order


def test_scan_batched_opset8_form():
    g = Graph()
    s0 = g.add_input("s0", TensorType((3, 2), F32))
    xs = g.add_input("xs", TensorType((3, 5, 2), F32))
    final, ys = g.op("scan", [s0, xs], {"body": _scan_body(g), "num_scan_inputs": 1, "batched": True})
    assert final.shape == (3, 2) and ys.shape == (3, 5, 2)
    g.set_outputs([final, ys])
    rng = np.random.default_rng(0)
    s, x = rng.random((3, 2), np.float32), rng.random((3, 5, 2), np.float32)
    f, y = run_graph(g, [s, x])
    want = s[:, None] + np.cumsum(x, axis=1)
    np.testing.assert_allclose(y, 2 * want, rtol=1e-6)
    np.testing.assert_allclose(f, want[:, -1], rtol=1e-6)


def test_scan_errors():
    g = Graph()
    s0 = g.add_input("s0", TensorType((2,), F32))
    a = g.add_input("a", TensorType((4, 2), F32))
    b = g.add_input("b", TensorType((5, 2), F32))
    body = _scan_body(g)
    with pytest.raises(ShapeError, match="num_scan_inputs") as e:
        g.op("scan", [s0, a], {"body": body, "num_scan_inputs": 3})
    assert "op scan" in str(e.value)
    two = Graph("body2", parent=g)
    for n in ("p", "q"):
        two.add_input(n, TensorType((2,), F32))
    two.set_outputs([two.inputs[0], two.inputs[1]])
    with pytest.raises(ShapeError, match="sequence length"):
        g.op("scan", [a, b], {"body": two, "num_scan_inputs": 2})
    with pytest.raises(ShapeError, match="one entry per scan input"):
        g.op("scan", [s0, a], {"body": body, "num_scan_inputs": 1, "scan_input_axes": [0, 0]})


# ---- the ONNX frontend ---------------------------------------------------------------------
def test_onnx_loop_with_untyped_growing_carried_value():
    F = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]),
         helper.make_node("Concat", ["acc", "piece"], ["acc_out"], axis=0)],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc", F, None)],      # no shape declared
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", F, None)])
    g = import_model(onnx_model(
        helper.make_node("Loop", ["M", "", "init"], ["final"], body=body),
        [value_info("M", TensorProto.INT64, []), value_info("init", F, [2]), value_info("piece", F, [3])],
        [value_info("final", F)], 13))
    g.verify()
    loop = g.nodes[0]
    # the body was re-typed so its carried input fits every iteration, not just the first
    assert _is_symbol(loop.attrs["body"].inputs[2].shape[0])
    assert _is_symbol(loop.outputs[0].shape[0])
    (out,) = run_graph(g, [np.array(3, np.int64), np.zeros(2, np.float32), np.ones(3, np.float32)])
    np.testing.assert_array_equal(out, [0, 0] + [1] * 9)


def test_onnx_if_with_known_condition_tolerates_an_invalid_dead_branch():
    F = TensorProto.FLOAT
    shape22 = helper.make_tensor("s", TensorProto.INT64, [2], [2, 2])
    bad = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["r"])], "bad", [],
                            [helper.make_tensor_value_info("r", F, None)], [shape22])
    good = helper.make_graph([helper.make_node("Neg", ["x"], ["n"])], "good", [],
                             [helper.make_tensor_value_info("n", F, None)])
    nodes = [helper.make_node("Size", ["x"], ["size"]),
             helper.make_node("Constant", [], ["five"], value_int=5),
             helper.make_node("Equal", ["size", "five"], ["is5"]),
             helper.make_node("If", ["is5"], ["y"], then_branch=good, else_branch=bad)]
    g = import_model(onnx_model(nodes, [value_info("x", F, [5])], [value_info("y", F)], 13))
    g.verify()
    node = g.nodes[-1]
    assert node.op == "if" and "never runs" in node.meta["note"]
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(run_graph(g, [x])[0], -x)
    # with a condition only known at run time an invalid branch is still an error
    model = onnx_model(helper.make_node("If", ["c"], ["y"], then_branch=good, else_branch=bad),
                       [value_info("x", F, [5]), value_info("c", TensorProto.BOOL, [])], [value_info("y", F)], 13)
    with pytest.raises(irgraph.IrgraphError, match="reshape"):
        import_model(model)
