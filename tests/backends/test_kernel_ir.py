"""The kernel IR: expression building (registry formulas against IRBuilder), folding, the
verifier and the printer."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import dtype as dt
from irgraph.backends.kernel_ir import (INDEX, OPS, SUPPORTED_DTYPES, Assign, Buffer, Const,
                                        IRBuilder, Kernel, Load, Local, Loop, LoweringError, Op,
                                        Store, Var, count_ops, format_kernel, walk_expr)
from irgraph.errors import CompileError
from irgraph.ops.registry import all_ops, get_op
from irgraph.ops.scalar import SCALAR_METHODS


def test_ops_are_the_scalar_builder_interface_plus_index_ops():
    assert set(OPS) == (set(SCALAR_METHODS) - {"const", "dtype_of"}) | {"idx_div", "idx_mod"}


def test_registry_formula_builds_an_expression_tree():
    b = IRBuilder()
    x = Var("x", dt.float32)
    e = get_op("gelu").scalar(b, x, approximate="none")
    ops = [n.op for n in walk_expr(e) if isinstance(n, Op)]
    assert "erf" in ops and "mul" in ops and e.dtype is dt.float32
    # the formula reads x more than once but x is one node of the DAG
    assert sum(1 for n in walk_expr(e) if n is x) == 1


def test_every_elementwise_formula_builds_for_float32():
    b = IRBuilder()
    for name, op in all_ops().items():
        if op.kind != "elementwise" or op.scalar is None:
            continue
        if name in ("cast", "full_like"):
            continue
        n = op.inputs[0]
        args = [Var(f"a{i}", dt.bool_ if (name == "where" and i == 0) else dt.float32) for i in range(n)]
        if op.dtypes and dt.float32 not in op.dtypes:
            args = [Var(f"a{i}", op.dtypes[0]) for i in range(n)]
        attrs = {k: a.default for k, a in op.attrs.items()}
        e = op.scalar(b, *args, **attrs)
        assert isinstance(e, (Op, Const, Var)), name


def test_constant_folding_matches_numpy():
    b = IRBuilder()
    e = b.div(Const(1.0, dt.float32), Const(3.0, dt.float32))
    assert isinstance(e, Const) and e.value == float(np.float32(1) / np.float32(3))
    e = b.div(Const(-7, dt.int32), Const(2, dt.int32))  # integer division truncates toward zero
    assert isinstance(e, Const) and e.value == -3
    e = b.cast(Const(300, dt.int32), dt.uint8)
    assert isinstance(e, Const) and e.value == 44


def test_index_simplification():
    b = IRBuilder()
    i = Var("i")
    assert b.add(i, Const(0, INDEX)) is i
    assert b.mul(i, Const(1, INDEX)) is i
    assert isinstance(b.mul(i, Const(0, INDEX)), Const)
    e = b.add(b.add(i, Const(3, INDEX)), Const(4, INDEX))
    assert isinstance(e, Op) and e.args[0] is i and e.args[1].value == 7
    assert b.idx_div(i, Const(1, INDEX)) is i
    assert b.idx_mod(i, Const(1, INDEX)).value == 0


def test_fast_flag_only_on_float_reassociable_ops():
    b = IRBuilder(fast=True)
    x, y = Var("x", dt.float32), Var("y", dt.float32)
    assert b.add(x, y).fast and b.max(x, y).fast
    assert not b.div(x, y).fast
    assert not b.add(Var("i", dt.int32), Var("j", dt.int32)).fast
    assert not IRBuilder().add(x, y).fast


def test_unsupported_dtype_raises_lowering_error():
    b = IRBuilder()
    assert dt.complex64 not in SUPPORTED_DTYPES and dt.float8e4m3fn in SUPPORTED_DTYPES
    with pytest.raises(LoweringError):
        b.cast(Var("x", dt.float32), dt.complex64)
    assert issubclass(LoweringError, CompileError)


def _kernel():
    x = Buffer("x", dt.float32, (4, 8), "input")
    y = Buffer("y", dt.float32, (4,), "output")
    b = IRBuilder(fast=True)
    i, j = Var("i"), Var("j")
    acc = Var("acc", dt.float32)
    load = Load(x, b.add(b.mul(i, Const(8, INDEX)), j))
    body = [Loop(i, 4, "parallel", [
        Local(acc, Const(0.0, dt.float32)),
        Loop(j, 8, "vector", [Assign(acc, b.add(acc, b.exp(load)))]),
        Store(y, i, acc)])]
    return Kernel("rowsum", [x, y], body)


def test_printer_is_readable():
    text = format_kernel(_kernel())
    assert "kernel rowsum(input x: float32[4,8], output y: float32[4])" in text
    assert "parallel for i in 0..4:" in text
    assert "vector for j in 0..8:" in text
    assert "var acc: float32 = 0.0" in text
    assert "acc = (acc + exp(x[((i * 8) + j)]))~" in text  # ~ marks a reassociable op
    assert "y[i] = acc" in text


def test_printer_names_shared_subexpressions():
    x = Buffer("x", dt.float32, (8,), "input")
    y = Buffer("y", dt.float32, (8,), "output")
    b = IRBuilder()
    i = Var("i")
    e = b.exp(Load(x, i))
    k = Kernel("sq", [x, y], [Loop(i, 8, "vector", [Store(y, i, b.mul(e, e))])])
    text = str(k)
    assert "let t0 = exp(x[i])" in text and "y[i] = (t0 * t0)" in text


def test_count_ops():
    assert count_ops(_kernel()) == {"exp": 1, "add": 2, "mul": 1}


def test_verifier_accepts_a_good_kernel_and_rejects_bad_ones():
    _kernel().verify()
    x = Buffer("x", dt.float32, (4,), "input")
    y = Buffer("y", dt.float32, (4,), "output")
    i = Var("i")
    with pytest.raises(CompileError, match="store to input"):
        Kernel("k", [x, y], [Loop(i, 4, "serial", [Store(x, i, Load(x, i))])]).verify()
    with pytest.raises(CompileError, match="outside its scope"):
        Kernel("k", [x, y], [Store(y, i, Load(x, i))]).verify()
    with pytest.raises(CompileError, match="storing float64"):
        Kernel("k", [x, y], [Loop(i, 4, "serial", [Store(y, i, Const(1.0, dt.float64))])]).verify()
    other = Buffer("z", dt.float32, (4,), "input")
    with pytest.raises(CompileError, match="foreign buffer"):
        Kernel("k", [x, y], [Loop(i, 4, "serial", [Store(y, i, Load(other, i))])]).verify()


def test_loop_kinds_and_roles_are_checked():
    with pytest.raises(ValueError):
        Loop(Var("i"), 3, "sideways")
    with pytest.raises(ValueError):
        Buffer("b", dt.float32, (1,), "scratch")
    for kind in ("serial", "parallel", "vector", "unroll", "block", "thread"):
        Loop(Var("i"), 3, kind)


def test_const_normalizes_to_its_dtype():
    assert Const(1.1, dt.float16).value == float(np.float16(1.1))
    assert Const(255, dt.int8).value == -1
    assert Const(-1, dt.uint16).value == 65535
    assert Const(2.7, dt.int32).value == 2
    assert Const(1, dt.bool_).value is True
