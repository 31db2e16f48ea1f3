"""Convolution ops: references against direct (loop) definitions and hand-computed values,
inference (static and symbolic shapes, dtypes), errors that name the op, and the ONNX
converters' handling of auto_pad / output_shape / kernel_shape."""
from __future__ import annotations

from functools import partial

import numpy as np
import onnx
import pytest
from onnx import helper

import irgraph
from irgraph import ShapeError, TensorType, run_graph
from irgraph.frontends.onnx import import_model
from irgraph.types import is_static_dim

import oprun
from oprun import ALL, build, onnx_model, run_on, value_info, window_defaults

RNG = np.random.default_rng(1234)
infer = partial(oprun.infer, const=ALL)  # array operands are constants


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def naive_conv(x, w, b=None, strides=None, pads=None, dilations=None, group=1):
    """Conv straight from its definition: one dot product per output pixel and channel."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    nsp = x.ndim - 2
    s, p, d = window_defaults(nsp, strides, pads, dilations)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p[i], p[i + nsp]) for i in range(nsp)])
    n, c = x.shape[:2]
    m, k = w.shape[0], w.shape[2:]
    outs = [(xp.shape[2 + i] - (k[i] - 1) * d[i] - 1) // s[i] + 1 for i in range(nsp)]
    cg, mg = c // group, m // group
    y = np.zeros((n, m) + tuple(outs))
    for oc in range(m):
        g = oc // mg
        for o in np.ndindex(*outs):
            win = tuple(slice(o[i] * s[i], o[i] * s[i] + (k[i] - 1) * d[i] + 1, d[i]) for i in range(nsp))
            patch = xp[(slice(None), slice(g * cg, (g + 1) * cg)) + win]
            y[(slice(None), oc) + o] = (patch * w[oc]).reshape(n, -1).sum(1)
    if b is not None:
        y += b.reshape((m,) + (1,) * nsp)
    return y


def naive_conv_transpose(x, w, b=None, strides=None, pads=None, dilations=None, group=1,
                         output_padding=None):
    """Transposed conv from its definition: every input pixel scatters w into the output."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    nsp = x.ndim - 2
    s, p, d = window_defaults(nsp, strides, pads, dilations)
    op = tuple(output_padding or (0,) * nsp)
    n, c = x.shape[:2]
    mg, k = w.shape[1], w.shape[2:]
    cg = c // group
    full = [s[i] * (x.shape[2 + i] - 1) + (k[i] - 1) * d[i] + 1 + op[i] for i in range(nsp)]
    y = np.zeros((n, mg * group) + tuple(full))
    for ic in range(c):
        g = ic // cg
        for i in np.ndindex(*x.shape[2:]):
            for t in np.ndindex(*k):
                at = tuple(i[j] * s[j] + t[j] * d[j] for j in range(nsp))
                contrib = x[(slice(None), ic) + i][:, None] * w[(ic, slice(None)) + t]
                y[(slice(None), slice(g * mg, (g + 1) * mg)) + at] += contrib
    y = y[(Ellipsis,) + tuple(slice(p[j], full[j] - p[j + nsp]) for j in range(nsp))]
    if b is not None:
        y = y + b.reshape((-1,) + (1,) * nsp)
    return y


# ---- conv ------------------------------------------------------------------------------------
CONV_CASES = [
    # x shape, w shape, attrs
    ((2, 3, 9), (4, 3, 3), {}),
    ((1, 3, 10), (6, 1, 4), {"group": 3, "strides": (2,), "pads": (2, 1), "dilations": (2,)}),
    ((2, 3, 7, 8), (5, 3, 3, 3), {"pads": (1, 1, 1, 1)}),
    ((1, 4, 9, 7), (6, 2, 3, 2), {"group": 2, "strides": (2, 1), "pads": (0, 1, 2, 0)}),
    ((1, 4, 9, 9), (4, 1, 3, 3), {"group": 4, "dilations": (2, 3), "pads": (2, 3, 2, 3)}),  # depthwise
    ((1, 4, 9, 9), (8, 1, 3, 3), {"group": 4, "strides": (3, 2)}),  # depthwise, multiplier 2
    ((1, 3, 6, 7), (2, 3, 1, 1), {"strides": (2, 3)}),
    ((2, 2, 5, 6, 4), (3, 2, 2, 3, 2), {"pads": (1, 0, 1, 0, 2, 1), "strides": (1, 2, 1)}),
]


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv_matches_direct_definition(xs, ws, attrs, bias):
    x, w = f32(*xs), f32(*ws)
    b = f32(ws[0]) if bias else None
    got = run_on("conv", x, w, b, attrs=attrs)
    want = naive_conv(x, w, b, attrs.get("strides"), attrs.get("pads"), attrs.get("dilations"),
                      attrs.get("group", 1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_hand_computed():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    w = np.array([[[[1, 0], [0, -1]]]], np.float32)  # x[i, j] - x[i+1, j+1] = -5 everywhere
    np.testing.assert_array_equal(run_on("conv", x, w), np.full((1, 1, 3, 3), -5, np.float32))
    ones = np.ones((1, 1, 3, 3), np.float32)
    got = run_on("conv", x, ones, np.array([100], np.float32), attrs={"pads": (1, 1, 1, 1), "strides": (3, 3)})
    # windows over rows/cols -1..1 and 2..4: each holds one in-bounds 2x2 block, plus bias
    np.testing.assert_array_equal(got, np.array([[[[100 + 0 + 1 + 4 + 5, 100 + 2 + 3 + 6 + 7],
                                                   [100 + 8 + 9 + 12 + 13, 100 + 10 + 11 + 14 + 15]]]],
                                                 np.float32))


@pytest.mark.parametrize("dtype", [np.float16, np.float64, "bfloat16"])
def test_conv_dtypes(dtype):
    import ml_dtypes
    dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
    x, w = f32(1, 3, 6, 6).astype(dtype), f32(4, 3, 3, 3).astype(dtype)
    got = run_on("conv", x, w, attrs={"pads": (1, 1, 1, 1)})
    assert got.dtype == np.dtype(dtype)
    want = naive_conv(x.astype(np.float64), w.astype(np.float64), pads=(1, 1, 1, 1))
    tol = 1e-12 if dtype == np.float64 else 3e-2
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol * 4)


def test_conv_batch_chunking_matches(monkeypatch):
    # large batches build the im2col matrix one slice at a time; the result must not change
    from irgraph.ops import conv as conv_mod
    x, w = f32(5, 2, 6, 6), f32(3, 2, 3, 3)
    whole = run_on("conv", x, w)
    monkeypatch.setattr(conv_mod, "_COLS_BYTES", 1)
    np.testing.assert_allclose(run_on("conv", x, w), whole, rtol=1e-6, atol=1e-6)


def _same_pads(n, k, s, d, upper):
    o = -(-n // s)
    total = max(0, (o - 1) * s + (k - 1) * d + 1 - n)
    lo = total // 2 if upper else total - total // 2
    return lo, total - lo


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_auto_pad_equals_explicit_pads(auto_pad):
    x, w = f32(1, 2, 7, 8), f32(3, 2, 4, 3)
    strides, dil = (2, 3), (1, 2)
    got = run_on("conv", x, w, attrs={"auto_pad": auto_pad, "strides": strides, "dilations": dil})
    if auto_pad == "VALID":
        pads = (0, 0, 0, 0)
    else:
        (a, b), (c, d) = [_same_pads(n, k, s, dd, auto_pad == "SAME_UPPER")
                          for n, k, s, dd in zip((7, 8), (4, 3), strides, dil)]
        pads = (a, c, b, d)
        assert got.shape[2:] == (4, 3)  # ceil(in / stride)
    np.testing.assert_allclose(got, naive_conv(x, w, strides=strides, pads=pads, dilations=dil),
                               rtol=1e-5, atol=1e-5)


def test_conv_auto_pad_on_symbolic_dims_resolves_at_run_time():
    w = f32(3, 2, 3, 3)
    g, (y,), _ = build("conv", [TensorType(("N", 2, "H", "W"), "float32"), w],
                       {"auto_pad": "SAME_LOWER", "strides": (2, 2)}, const=ALL)
    assert y.type.shape[:2] == ("N", 3) and not any(is_static_dim(d) for d in y.type.shape[2:])
    for hw in ((5, 6), (8, 7)):
        x = f32(2, 2, *hw)
        pads = [_same_pads(n, 3, 2, 1, False) for n in hw]
        want = naive_conv(x, w, strides=(2, 2), pads=(pads[0][0], pads[1][0], pads[0][1], pads[1][1]))
        np.testing.assert_allclose(run_graph(g, [x])[0], want, rtol=1e-5, atol=1e-5)


def test_conv_inference():
    assert infer("conv", [TensorType((2, 3, 32, 30), "float32"), f32(8, 3, 5, 3)],
                 {"strides": (2, 2), "pads": (2, 1, 2, 1)}) == TensorType((2, 8, 16, 15), "float32")
    t = infer("conv", [TensorType(("N", 3, 32, "W"), "float16"), TensorType((8, 3, 3, 3), "float16")])
    assert t.dtype is irgraph.dtype.float16
    assert t.shape[:3] == ("N", 8, 30) and not is_static_dim(t.shape[3])
    assert infer("conv", [TensorType(None, "float32"), f32(8, 3, 3, 3)]).shape is None
    # depthwise with a symbolic batch
    assert infer("conv", [TensorType(("B", 6, 10, 10), "float32"), f32(12, 1, 3, 3)],
                 {"group": 6}).shape == ("B", 12, 8, 8)


@pytest.mark.parametrize("xs,ws,b,attrs,needle", [
    ((1, 3, 8, 8), (4, 2, 3, 3), None, {}, "channels"),
    ((1, 4, 8, 8), (6, 2, 3, 3), None, {"group": 4}, "group"),
    ((1, 4, 8, 8), (5, 2, 3, 3), None, {"group": 2}, "divisible"),
    ((1, 3, 8, 8), (4, 3, 3, 3), (5,), {}, "bias"),
    ((1, 3, 2, 8), (4, 3, 3, 3), None, {}, "larger than the padded input"),
    ((1, 3, 8, 8), (4, 3, 3, 3), None, {"pads": (1, 1)}, "pads"),
    ((1, 3, 8, 8), (4, 3, 3, 3), None, {"strides": (1, 1, 1)}, "strides"),
    ((1, 3, 8, 8), (4, 3, 3, 3), None, {"strides": (0, 1)}, "strides"),
    ((1, 3, 8, 8), (4, 3, 3, 3), None, {"pads": (-1, 0, 0, 0)}, "pads"),
    ((1, 3, 8, 8), (4, 3, 3), None, {}, "rank"),
    ((3, 8), (4, 3), None, {}, "rank"),
    ((1, 3, 8, 8), (4, 3, 3, 3), None, {"auto_pad": "SAME"}, "auto_pad"),
    ((1, 3, 8, 8), (4, 3, 3, 3), None, {"group": 0}, "group"),
])
def test_conv_errors(xs, ws, b, attrs, needle):
    ins = [TensorType(xs, "float32"), f32(*ws)] + ([f32(*b)] if b else [])
    with pytest.raises(ShapeError, match=needle) as e:
        infer("conv", ins, attrs)
    assert "conv" in str(e.value)


def test_conv_dtype_errors():
    with pytest.raises(ShapeError, match="share one dtype"):
        infer("conv", [TensorType((1, 3, 8, 8), "float32"), f32(4, 3, 3, 3).astype(np.float16)])
    with pytest.raises(ShapeError, match="unsupported dtype"):
        infer("conv", [TensorType((1, 3, 8, 8), "bool"), np.ones((4, 3, 3, 3), bool)])


# ---- conv_transpose ------------------------------------------------------------------------
CONVT_CASES = [
    ((1, 2, 5), (2, 3, 3), {}),
    ((2, 2, 4), (2, 2, 3), {"strides": (3,), "pads": (1, 2), "output_padding": (2,), "dilations": (2,)}),
    ((1, 3, 4, 5), (3, 2, 3, 3), {"strides": (2, 2), "pads": (1, 1, 1, 1)}),
    ((1, 4, 3, 3), (4, 1, 2, 3), {"group": 2, "strides": (2, 1), "output_padding": (1, 0)}),
    ((1, 2, 3, 2, 3), (2, 2, 2, 2, 2), {"strides": (1, 2, 2), "pads": (0, 1, 0, 1, 0, 1)}),
]


@pytest.mark.parametrize("xs,ws,attrs", CONVT_CASES)
def test_conv_transpose_matches_direct_definition(xs, ws, attrs):
    x, w = f32(*xs), f32(*ws)
    b = f32(ws[1] * attrs.get("group", 1))
    got = run_on("conv_transpose", x, w, b, attrs=attrs)
    want = naive_conv_transpose(x, w, b, attrs.get("strides"), attrs.get("pads"),
                                attrs.get("dilations"), attrs.get("group", 1), attrs.get("output_padding"))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_transpose_is_the_adjoint_of_conv():
    # <conv(x, w), y> == <x, conv_transpose(y, w)> for matching geometry
    x, w = f32(2, 4, 9, 8), f32(6, 2, 3, 2)
    attrs = {"strides": (2, 3), "pads": (1, 0, 1, 1), "dilations": (1, 2), "group": 2}
    y_shape = run_on("conv", x, w, attrs=attrs).shape
    y = f32(*y_shape)
    # output_padding restores the input size lost to the floor in conv's output size
    natural = [s * (o - 1) + (k - 1) * d + 1 - pb - pe for s, o, k, d, pb, pe in
               zip((2, 3), y_shape[2:], (3, 2), (1, 2), (1, 0), (1, 1))]
    opad = tuple(n - m for n, m in zip((9, 8), natural))
    xt = run_on("conv_transpose", y, w, attrs={**attrs, "output_padding": opad})
    assert xt.shape == x.shape
    lhs = float((run_on("conv", x, w, attrs=attrs).astype(np.float64) * y).sum())
    rhs = float((x.astype(np.float64) * xt).sum())
    assert abs(lhs - rhs) < 1e-3 * max(1.0, abs(lhs))


def test_conv_transpose_output_shape_and_auto_pad():
    x, w = f32(1, 1, 3, 3), f32(1, 2, 3, 3)
    full = naive_conv_transpose(x, w, strides=(3, 2))            # (1, 2, 9, 7)
    got = run_on("conv_transpose", x, w, attrs={"strides": (3, 2), "output_shape": (10, 8)})
    # a larger output than the full result is zero-extended at the end
    want = np.zeros((1, 2, 10, 8))
    want[:, :, :9, :7] = full
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    got = run_on("conv_transpose", x, w, attrs={"strides": (3, 2), "output_shape": (7, 5)})
    # total padding (2, 2): the larger half at the start unless SAME_UPPER
    np.testing.assert_allclose(got, full[:, :, 1:8, 1:6], rtol=1e-5, atol=1e-5)
    got = run_on("conv_transpose", x, w, attrs={"strides": (2, 2), "auto_pad": "SAME_UPPER"})
    full2 = naive_conv_transpose(x, w, strides=(2, 2))           # (1, 2, 7, 7) -> 6 x 6
    np.testing.assert_allclose(got, full2[:, :, :6, :6], rtol=1e-5, atol=1e-5)
    got = run_on("conv_transpose", x, w, attrs={"strides": (2, 2), "auto_pad": "SAME_LOWER"})
    np.testing.assert_allclose(got, full2[:, :, 1:, 1:], rtol=1e-5, atol=1e-5)


def test_conv_transpose_inference_and_errors():
    assert infer("conv_transpose", [TensorType(("N", 4, 5, "W"), "float32"), f32(4, 3, 3, 3)],
                 {"strides": (2, 2), "group": 2}).shape[:3] == ("N", 6, 11)
    assert infer("conv_transpose", [TensorType(("N", 4, "H", "W"), "float32"), f32(4, 3, 3, 3)],
                 {"output_shape": (20, 21)}).shape == ("N", 3, 20, 21)
    with pytest.raises(ShapeError, match="conv_transpose.*channels"):
        infer("conv_transpose", [TensorType((1, 5, 4, 4), "float32"), f32(4, 3, 3, 3)])
    with pytest.raises(ShapeError, match="conv_transpose.*output_shape"):
        infer("conv_transpose", [TensorType((1, 4, 4, 4), "float32"), f32(4, 3, 3, 3)], {"output_shape": (9,)})
    with pytest.raises(ShapeError, match="conv_transpose.*not positive"):
        infer("conv_transpose", [TensorType((1, 4, 2, 2), "float32"), f32(4, 3, 2, 2)], {"pads": (2, 2, 2, 2)})
    with pytest.raises(ShapeError, match="conv_transpose.*bias"):
        infer("conv_transpose", [TensorType((1, 4, 4, 4), "float32"), f32(4, 3, 3, 3), f32(4)])


# ---- deform_conv ---------------------------------------------------------------------------
def test_deform_conv_with_zero_offsets_is_conv():
    x, w, b = f32(2, 4, 7, 6), f32(6, 2, 3, 2), f32(6)
    attrs = {"group": 2, "strides": (2, 1), "pads": (1, 0, 1, 1), "dilations": (1, 2)}
    want = run_on("conv", x, w, b, attrs=attrs)
    off = np.zeros((2, 2 * 3 * 2 * 2) + want.shape[2:], np.float32)
    got = run_on("deform_conv", x, w, off, b, attrs={**attrs, "offset_group": 2})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # an all-0.5 mask halves the result before the bias
    mask = np.full((2, 2 * 3 * 2) + want.shape[2:], 0.5, np.float32)
    got = run_on("deform_conv", x, w, off, b, mask, attrs={**attrs, "offset_group": 2})
    np.testing.assert_allclose(got, 0.5 * (want - b.reshape(6, 1, 1)) + b.reshape(6, 1, 1), rtol=1e-5, atol=1e-5)


def test_deform_conv_bilinear_hand_computed():
    x = np.array([[[[1, 2], [3, 4]]]], np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    off = np.zeros((1, 2, 2, 2), np.float32)
    off[0, :, 0, 0] = 0.5     # (0, 0) samples the centre: mean of all four
    off[0, 0, 1, 1] = 1.0     # (1, 1) samples row 2: outside, so zero
    off[0, 1, 0, 1] = -0.25   # (0, 1) samples x = 0.75 between 1 and 2
    y = run_on("deform_conv", x, w, off)
    np.testing.assert_allclose(y[0, 0], [[2.5, 1.75], [3, 0]], rtol=1e-6)


def test_deform_conv_inference_errors():
    with pytest.raises(ShapeError, match="deform_conv.*offset"):
        infer("deform_conv", [TensorType((1, 2, 5, 5), "float32"), f32(3, 2, 3, 3), f32(1, 9, 3, 3)])
    with pytest.raises(ShapeError, match="deform_conv.*offset_group"):
        infer("deform_conv", [TensorType((1, 3, 5, 5), "float32"), f32(3, 3, 3, 3), f32(1, 36, 3, 3)],
              {"offset_group": 2})


# ---- causal_conv_with_state ----------------------------------------------------------------
@pytest.mark.parametrize("activation", ["none", "silu"])
def test_causal_conv_with_state_matches_conv(activation):
    x, w, b, past = f32(2, 3, 6), f32(3, 1, 4), f32(3), f32(2, 3, 3)
    y, state = run_on("causal_conv_with_state", x, w, b, past, attrs={"activation": activation}, num_outputs=2)
    seq = np.concatenate([past, x], axis=2)
    want = naive_conv(seq, w, b, group=3)
    if activation == "silu":
        want = want / (1 + np.exp(-want))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(state, seq[:, :, -3:])


def test_causal_conv_with_state_decode_steps_match_prefill():
    x, w = f32(1, 2, 7), f32(2, 1, 3)
    full, _ = run_on("causal_conv_with_state", x, w, num_outputs=2)
    state = np.zeros((1, 2, 2), np.float32)
    steps = []
    for t in range(7):
        y, state = run_on("causal_conv_with_state", x[:, :, t:t + 1], w, None, state, num_outputs=2)
        steps.append(y)
    np.testing.assert_allclose(np.concatenate(steps, axis=2), full, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(state, x[:, :, -2:])
    t = infer("causal_conv_with_state", [TensorType(("B", 2, "L"), "float32"), w], num_outputs=2)
    assert t[0].shape == ("B", 2, "L") and t[1].shape == ("B", 2, 2)
    with pytest.raises(ShapeError, match="causal_conv_with_state.*weight"):
        infer("causal_conv_with_state", [TensorType((1, 3, 5), "float32"), w], num_outputs=2)


# ---- ONNX converters -----------------------------------------------------------------------
def test_onnx_conv_auto_pad_is_resolved_for_static_shapes():
    w = f32(4, 3, 3, 3)
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])
    m = onnx_model(node, [value_info("x", shape=[1, 3, 8, 7])], [value_info("y")], opset=7,
                   inits=[onnx.numpy_helper.from_array(w, "w")])
    g = import_model(m)
    (n,) = g.nodes
    assert n.op == "conv" and n.attrs["auto_pad"] == "NOTSET" and n.attrs["pads"] == (0, 1, 1, 1)
    x = f32(1, 3, 8, 7)
    np.testing.assert_allclose(irgraph.compile(m)(x), naive_conv(x, w, strides=(2, 2), pads=(0, 1, 1, 1)),
                               rtol=1e-5, atol=1e-5)


def test_onnx_conv_transpose_output_shape():
    w = f32(2, 3, 3, 3)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], output_shape=[9, 10])
    m = onnx_model(node, [value_info("x", shape=[1, 2, 4, 4])], [value_info("y")],
                   inits=[onnx.numpy_helper.from_array(w, "w")])
    x = f32(1, 2, 4, 4)
    full = naive_conv_transpose(x, w, strides=(2, 2))            # 9 x 9
    want = np.zeros((1, 3, 9, 10))
    want[..., :9] = full
    np.testing.assert_allclose(irgraph.compile(m)(x), want, rtol=1e-5, atol=1e-5)


def test_onnx_conv_kernel_shape_must_match_weight():
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[5, 5])
    m = onnx_model(node, [value_info("x", shape=[1, 3, 8, 8])], [value_info("y")],
                   inits=[onnx.numpy_helper.from_array(f32(4, 3, 3, 3), "w")])
    with pytest.raises(irgraph.ModelImportError, match="kernel_shape"):
        irgraph.compile(m)


def test_conv_reference_is_fast_enough_for_cnns():
    # the interpreter runs whole ImageNet CNNs through this reference: it must be im2col + BLAS,
    # not per-pixel Python. 1x64x56x56 (*) 64x64x3x3 has 3136 pixels x 64 channels; a per-pixel
    # loop would make well over 10^5 Python-level steps, which the call counter catches.
    import sys
    x, w = f32(1, 64, 56, 56), f32(64, 64, 3, 3)
    calls = [0]

    def count(frame, event, arg):
        if event in ("call", "c_call"):
            calls[0] += 1

    sys.setprofile(count)
    try:
        run_on("conv", x, w, attrs={"pads": (1, 1, 1, 1)})
    finally:
        sys.setprofile(None)
    assert calls[0] < 2000, f"{calls[0]} Python calls for one conv"
