"""Lowering graph nodes to kernel IR: structure of the loop nests (numerics are checked through
the CPU target in tests/backends/cpu)."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import dtype as dt
from irgraph.backends.kernel_ir import (Assign, Load, Local, Loop, LoweringError, Op, Store,
                                        count_ops, walk_expr, walk_stmts)
from irgraph.backends.lower import can_lower, lower_node
from irgraph.graph import Graph
from irgraph.passes.group import make_group
from irgraph.types import TensorType


def _node(op, shapes, attrs=None, consts=(), dtype="float32", num_outputs=None):
    g = Graph()
    ins = [g.add_input(f"x{i}", TensorType(s, dtype)) for i, s in enumerate(shapes)]
    ins += [g.add_const(np.asarray(c)) for c in consts]
    g.op(op, ins, attrs or {}, num_outputs=num_outputs)
    return g, g.nodes[-1]


def _loops(kernel):
    return [s for s in walk_stmts(kernel.body) if isinstance(s, Loop)]


def _stores(kernel):
    return [s for s in walk_stmts(kernel.body) if isinstance(s, Store)]


def test_elementwise_lowers_from_the_registry_formula():
    _, n = _node("gelu", [(4, 8)])
    k = lower_node(n).kernel
    ops = count_ops(k)
    assert ops.get("erf") == 1 and ops.get("mul", 0) >= 3
    assert [b.role for b in k.params] == ["input", "output"]
    # one flat loop: input and output are contiguous and of one shape
    loops = _loops(k)
    assert len(loops) == 1 and loops[0].extent == 32


def test_broadcast_merges_dims_and_keeps_inner_loop_contiguous():
    _, n = _node("add", [(2, 16, 8, 8), (1, 16, 1, 1)])
    k = lower_node(n).kernel
    loops = _loops(k)
    assert [lp.extent for lp in loops] == [32, 64]   # (N*C) x (H*W)
    assert loops[1].kind == "vector"
    st = _stores(k)[0]
    inner = loops[1].var
    # the inner loop reads x contiguously and the bias without any division
    loads = [e for e in walk_expr(st.value) if isinstance(e, Load)]
    assert len(loads) == 2
    bias = next(ld for ld in loads if ld.buf.shape == (1, 16, 1, 1))
    assert all(v is not inner for v in walk_expr(bias.index))


def test_transpose_is_strided_index_arithmetic():
    _, n = _node("transpose", [(6, 10)], {"perm": [1, 0]})
    k = lower_node(n).kernel
    ops = count_ops(k)
    assert "idx_div" not in ops or ops["idx_div"] <= 1   # only the outer loop's index recovery
    st = _stores(k)[0]
    ld = next(e for e in walk_expr(st.value) if isinstance(e, Load))
    assert ld.buf.name.startswith("x0")


def test_reshape_of_contiguous_data_is_a_flat_copy():
    _, n = _node("reshape", [(4, 6)], consts=[np.array([3, 8], np.int64)])
    k = lower_node(n).kernel
    assert [lp.extent for lp in _loops(k)] == [24]
    assert "idx_div" not in count_ops(k) and "idx_mod" not in count_ops(k)


def test_reshape_after_transpose_needs_index_division():
    g = Graph()
    x = g.add_input("x", TensorType((4, 6), "float32"))
    t = g.op("transpose", [x], {"perm": [1, 0]})
    r = g.op("reshape", [t, g.add_const(np.array([24], np.int64))])
    g.set_outputs([r])
    f = make_group(g, list(g.nodes), "movement")
    k = lower_node(f).kernel
    ops = count_ops(k)
    assert ops.get("idx_div", 0) + ops.get("idx_mod", 0) >= 2


def test_reduction_over_last_axis_keeps_a_scalar_accumulator():
    _, n = _node("reduce_sum", [(8, 100)], {"keepdims": 1}, consts=[np.array([1], np.int64)])
    k = lower_node(n).kernel
    locs = [s for s in walk_stmts(k.body) if isinstance(s, Local)]
    assigns = [s for s in walk_stmts(k.body) if isinstance(s, Assign)]
    assert len(locs) == 1 and len(assigns) == 1
    assert assigns[0].value.op == "add" and assigns[0].value.fast   # reassociation allowed
    inner = [lp for lp in _loops(k) if lp.kind == "vector"]
    assert inner and inner[0].extent == 100


def test_reduction_over_a_leading_axis_accumulates_in_memory():
    _, n = _node("reduce_max", [(50, 64)], {"keepdims": 0}, consts=[np.array([0], np.int64)])
    k = lower_node(n).kernel
    assert not [s for s in walk_stmts(k.body) if isinstance(s, Local)]
    vec = [lp for lp in _loops(k) if lp.kind == "vector"]
    assert any(lp.extent == 64 for lp in vec)       # the kept axis is the vector loop
    assert count_ops(k).get("max") == 1


def test_reduce_mean_divides_by_the_count():
    _, n = _node("reduce_mean", [(3, 5, 7)], {"keepdims": 0}, consts=[np.array([1, 2], np.int64)])
    k = lower_node(n).kernel
    divs = [e for s in _stores(k) for e in walk_expr(s.value) if isinstance(e, Op) and e.op == "div"]
    assert divs and divs[0].args[1].value == 35.0


def test_composite_lowers_through_its_decomposition():
    _, n = _node("softmax", [(4, 32)], {"axis": -1})
    k = lower_node(n).kernel
    ops = count_ops(k)
    assert ops.get("max") and ops.get("exp") and ops.get("div")
    assert k.temps   # the row max (and the exponentials, read twice) are stored once


def test_fused_group_is_one_kernel_with_one_output():
    g = Graph()
    x = g.add_input("x", TensorType((4, 32), "float32"))
    y = g.op("relu", [g.op("mul", [x, g.add_const(np.float32(2.0))])])
    z = g.op("add", [y, g.add_const(np.ones(32, np.float32))])
    g.set_outputs([z])
    f = make_group(g, list(g.nodes), "elementwise", "mul_relu_add")
    plan = lower_node(f)
    k = plan.kernel
    assert k.name == "mul_relu_add" and len(_stores(k)) == 1 and not k.temps
    assert [b.role for b in k.params].count("const") == 1      # the ones vector; 2.0 is inlined
    assert [v.name for _, v in plan.inputs] == ["x"]
    assert len(plan.outputs) == 1


def test_costly_value_read_twice_is_stored_once():
    g = Graph()
    x = g.add_input("x", TensorType((64,), "float32"))
    e = g.op("exp", [x])
    g.set_outputs([g.op("add", [g.op("mul", [e, e]), e])])
    k = lower_node(make_group(g, list(g.nodes), "elementwise")).kernel
    assert len(k.temps) == 1 and count_ops(k).get("exp") == 1

    g = Graph()
    x = g.add_input("x", TensorType((64,), "float32"))
    a = g.op("neg", [x])
    g.set_outputs([g.op("add", [g.op("mul", [a, a]), a])])
    k = lower_node(make_group(g, list(g.nodes), "elementwise")).kernel
    assert not k.temps   # cheap: recomputed in registers instead


def test_matmul_template_accumulates_along_contiguous_rows():
    _, n = _node("matmul", [(8, 16), (16, 32)])
    k = lower_node(n).kernel
    vec = [lp for lp in _loops(k) if lp.kind == "vector"]
    assert any(lp.extent == 32 for lp in vec)
    fops = [e.op for s in _stores(k) for e in walk_expr(s.value) if isinstance(e, Op) and e.dtype is dt.float32]
    assert sorted(fops) == ["add", "mul"]   # C[i, j] += A[i, k] * B[k, j]


def test_matmul_with_a_transposed_constant_is_relaid_out_at_compile_time():
    g = Graph()
    x = g.add_input("x", TensorType((4, 16), "float32"))
    w = g.add_const(np.arange(32 * 16, dtype=np.float32).reshape(32, 16))
    y = g.op("matmul", [x, g.op("transpose", [w], {"perm": [1, 0]})])
    g.set_outputs([y])
    k = lower_node(make_group(g, list(g.nodes), "matmul")).kernel
    consts = [b for b in k.params if b.role == "const"]
    assert any(c.shape == (16, 32) and np.array_equal(c.data, w.const.T) for c in consts)


def test_concat_is_stored_part_by_part():
    g, n = _node("concat", [(2, 3), (2, 5)], {"axis": 1})
    k = lower_node(n).kernel
    assert len(_stores(k)) == 2
    assert not any(isinstance(e, Op) and e.op == "select" for s in _stores(k) for e in walk_expr(s.value))


def test_missing_lowering_and_runtime_axes_are_reported():
    _, n = _node("nonzero", [(4,)])
    assert "nonzero" in can_lower(n)
    g = Graph()
    x = g.add_input("x", TensorType((4,), "float32"))
    ax = g.add_input("axes", TensorType((1,), "int64"))
    g.op("reduce_sum", [x, ax], {"keepdims": 0})
    with pytest.raises(LoweringError, match="only known at run time"):
        lower_node(g.nodes[-1])


def test_cumsum_over_a_runtime_axis_branches_on_it():
    from irgraph.backends.kernel_ir import If
    g = Graph()
    x = g.add_input("x", TensorType((4, 5, 6), "float32"))
    ax = g.add_input("axis", TensorType((), "int64"))
    g.op("cumsum", [x, ax])
    k = lower_node(g.nodes[-1]).kernel
    ifs = [s for s in k.body if isinstance(s, If)]
    assert len(ifs) == 3   # one loop nest per possible axis


def test_unsupported_dtype_is_a_lowering_error():
    g = Graph()
    x = g.add_input("x", TensorType((4,), "float32"))
    g.op("cast", [x], {"to": dt.complex64})
    with pytest.raises(LoweringError, match="complex64"):
        lower_node(g.nodes[-1])


def test_lowering_is_deterministic():
    _, n = _node("softmax", [(4, 32)], {"axis": 0})
    assert str(lower_node(n).kernel) == str(lower_node(n).kernel)
