"""Pooling ops: references against direct (loop) definitions and hand-computed values,
inference (static and symbolic shapes, dtypes), errors that name the op, and the ONNX
converters' handling of auto_pad and Indices."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from onnx import TensorProto, helper

import irgraph
from irgraph import ShapeError, TensorType
from irgraph.frontends.onnx import import_model
from irgraph.types import is_static_dim

import oprun
from oprun import ALL, onnx_model, run_on, value_info, window_defaults

RNG = np.random.default_rng(1234)
infer = partial(oprun.infer, const=ALL)  # array operands are constants


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def naive_pool(x, kernel, reduce, strides=None, pads=None, dilations=None, fill=0.0):
    """Pool from its definition (no ceil mode): ``reduce(values in window, n_real, n_with_pads)``."""
    x = x.astype(np.float64)
    nsp = x.ndim - 2
    s, p, d = window_defaults(nsp, strides, pads, dilations)
    real = np.pad(np.ones(x.shape[2:]), [(p[i], p[i + nsp]) for i in range(nsp)])
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p[i], p[i + nsp]) for i in range(nsp)], constant_values=fill)
    outs = [(xp.shape[2 + i] - (kernel[i] - 1) * d[i] - 1) // s[i] + 1 for i in range(nsp)]
    y = np.zeros(x.shape[:2] + tuple(outs))
    for o in np.ndindex(*outs):
        win = tuple(slice(o[i] * s[i], o[i] * s[i] + (kernel[i] - 1) * d[i] + 1, d[i]) for i in range(nsp))
        vals = xp[(slice(None), slice(None)) + win].reshape(x.shape[:2] + (-1,))
        y[(slice(None), slice(None)) + o] = reduce(vals, real[win].sum(), real[win].size)
    return y


# ---- pools -----------------------------------------------------------------------------------
POOL_CASES = [
    ((2, 3, 9), (3,), {"strides": (2,)}),
    ((1, 2, 7, 8), (3, 3), {"pads": (1, 1, 1, 1), "strides": (2, 2)}),
    ((1, 2, 7, 8), (2, 3), {"pads": (1, 0, 0, 2), "strides": (1, 2), "dilations": (2, 1)}),
    ((1, 1, 5, 4, 6), (2, 2, 3), {"strides": (2, 1, 2), "pads": (1, 0, 1, 0, 1, 1)}),
]


@pytest.mark.parametrize("xs,k,attrs", POOL_CASES)
def test_max_pool_matches_direct_definition(xs, k, attrs):
    x = f32(*xs)
    y, idx = run_on("max_pool", x, attrs={"kernel_shape": k, "indices": True, **attrs}, num_outputs=2)
    want = naive_pool(x, k, lambda v, *_: v.max(-1), attrs.get("strides"), attrs.get("pads"),
                      attrs.get("dilations"), fill=-np.inf)
    np.testing.assert_array_equal(y, want.astype(np.float32))
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(x.reshape(-1)[idx], y)  # indices point at the maxima in x
    assert run_on("max_pool", x, attrs={"kernel_shape": k, **attrs}).shape == y.shape


def test_max_pool_indices_storage_order_and_ties():
    x = np.array([[[[1, 2], [4, 3]]], [[[7, 7], [7, 0]]]], np.float32)  # (2, 1, 2, 2)
    for order, want in ((0, [2, 4]), (1, [1, 4])):
        y, idx = run_on("max_pool", x, attrs={"kernel_shape": (2, 2), "indices": True, "storage_order": order},
                     num_outputs=2)
        np.testing.assert_array_equal(y.reshape(-1), [4, 7])
        # batch 1 ties three ways: the first in scan order wins, offset by one plane of 4
        np.testing.assert_array_equal(idx.reshape(-1), want)


def test_max_pool_integers_and_ceil_mode():
    x = np.array([[[[200, 3, 9], [4, 255, 0], [1, 2, 7]]]], np.uint8)
    y = run_on("max_pool", x, attrs={"kernel_shape": (2, 2), "strides": (2, 2), "ceil_mode": True})
    np.testing.assert_array_equal(y, np.array([[[[255, 9], [2, 7]]]], np.uint8))
    y = run_on("max_pool", x, attrs={"kernel_shape": (2, 2), "strides": (2, 2)})
    np.testing.assert_array_equal(y, np.array([[[[255]]]], np.uint8))
    y = run_on("max_pool", (x.astype(np.int8) - 100).astype(np.int8), attrs={"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)})
    assert y.dtype == np.int8 and y.shape == (1, 1, 3, 3)


@pytest.mark.parametrize("xs,k,attrs", POOL_CASES)
@pytest.mark.parametrize("include", [False, True])
def test_avg_pool_matches_direct_definition(xs, k, attrs, include):
    x = f32(*xs)
    y = run_on("avg_pool", x, attrs={"kernel_shape": k, "count_include_pad": include, **attrs})
    want = naive_pool(x, k, lambda v, real, size: v.sum(-1) / (size if include else real),
                      attrs.get("strides"), attrs.get("pads"), attrs.get("dilations"))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_avg_pool_ceil_mode_hand_computed():
    x = np.arange(1, 7, dtype=np.float32).reshape(1, 1, 6)
    attrs = {"kernel_shape": (2,), "strides": (2,), "pads": (1, 0)}
    # padded [0, 1 | 2, 3 | 4, 5 | 6, -]: the last window overhangs past the end
    np.testing.assert_allclose(run_on("avg_pool", x, attrs=attrs).reshape(-1), [1, 2.5, 4.5])
    np.testing.assert_allclose(run_on("avg_pool", x, attrs={**attrs, "ceil_mode": True}).reshape(-1),
                               [1, 2.5, 4.5, 6])
    np.testing.assert_allclose(run_on("avg_pool", x, attrs={**attrs, "ceil_mode": True,
                                                         "count_include_pad": True}).reshape(-1),
                               [0.5, 2.5, 4.5, 6])
    # [1, 2 | 3, 4 | pad, -]: a window that would start in the end padding is dropped
    y = run_on("avg_pool", x[..., :4], attrs={"kernel_shape": (2,), "strides": (2,), "pads": (0, 1), "ceil_mode": True})
    np.testing.assert_allclose(y.reshape(-1), [1.5, 3.5])
    y = run_on("avg_pool", x[..., :5], attrs={"kernel_shape": (2,), "strides": (2,), "pads": (0, 1), "ceil_mode": True})
    np.testing.assert_allclose(y.reshape(-1), [1.5, 3.5, 5])


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_lp_pool_matches_direct_definition(p):
    x = f32(1, 2, 7, 6)
    attrs = {"kernel_shape": (3, 2), "strides": (2, 1), "pads": (1, 0, 1, 1), "p": p}
    want = naive_pool(x, (3, 2), lambda v, *_: (np.abs(v) ** p).sum(-1) ** (1 / p),
                      (2, 1), (1, 0, 1, 1))
    np.testing.assert_allclose(run_on("lp_pool", x, attrs=attrs), want, rtol=1e-5, atol=1e-6)


def test_pool_auto_pad_and_float16():
    x = f32(1, 2, 7, 5).astype(np.float16)
    y = run_on("avg_pool", x, attrs={"kernel_shape": (3, 2), "strides": (2, 2), "auto_pad": "SAME_UPPER"})
    assert y.dtype == np.float16 and y.shape == (1, 2, 4, 3)
    # SAME_UPPER here: pads (1, 0) begin, (1, 1) end
    want = naive_pool(x, (3, 2), lambda v, real, _: v.sum(-1) / real, (2, 2), (1, 0, 1, 1))
    np.testing.assert_allclose(y.astype(np.float64), want, rtol=2e-3, atol=2e-3)


def test_pool_inference_and_errors():
    t = infer("max_pool", [TensorType(("N", 3, 224, "W"), "float32")],
              {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1), "indices": True})
    assert t[0].shape[:3] == ("N", 3, 112) and not is_static_dim(t[0].shape[3])
    assert t[1].dtype is irgraph.dtype.int64 and t[1].shape == t[0].shape
    assert infer("avg_pool", [TensorType((1, 1, 5, 5), "float32")],
                 {"kernel_shape": (2, 2), "strides": (2, 2), "ceil_mode": True}).shape == (1, 1, 3, 3)
    with pytest.raises(ShapeError, match="max_pool.*kernel_shape"):
        infer("max_pool", [TensorType((1, 3, 8, 8), "float32")], {"kernel_shape": (3,)})
    with pytest.raises(ShapeError, match="avg_pool.*unsupported dtype"):
        infer("avg_pool", [TensorType((1, 3, 8, 8), "int32")], {"kernel_shape": (3, 3)})
    with pytest.raises(ShapeError, match="lp_pool.*larger than the padded input"):
        infer("lp_pool", [TensorType((1, 3, 2, 8), "float32")], {"kernel_shape": (3, 3)})
    with pytest.raises(ShapeError, match="max_pool.*storage_order"):
        infer("max_pool", [TensorType((1, 3, 8, 8), "float32")], {"kernel_shape": (3, 3), "storage_order": 2})
    with pytest.raises(ShapeError, match="max_pool.*kernel_shape"):
        infer("max_pool", [TensorType((1, 3, 8, 8), "float32")], {"kernel_shape": (0, 3)})


@pytest.mark.parametrize("mode", ["avg", "max", "lp"])
def test_global_pool(mode):
    x = f32(2, 3, 4, 5, 2)
    y = run_on("global_pool", x, attrs={"mode": mode, "p": 3.0})
    xd = x.astype(np.float64)
    want = {"avg": xd.mean(axis=(2, 3, 4), keepdims=True), "max": xd.max(axis=(2, 3, 4), keepdims=True),
            "lp": (np.abs(xd) ** 3).sum(axis=(2, 3, 4), keepdims=True) ** (1 / 3)}[mode]
    np.testing.assert_allclose(y, want, rtol=1e-5)
    assert infer("global_pool", [TensorType(("N", "C", "H", "W"), "float16")], {"mode": mode}) == \
        TensorType(("N", "C", 1, 1), "float16")
    with pytest.raises(ShapeError, match="global_pool.*rank"):
        infer("global_pool", [TensorType(("N", "C"), "float32")], {"mode": mode})
    with pytest.raises(ShapeError, match="global_pool.*mode"):
        infer("global_pool", [TensorType((1, 2, 3), "float32")], {"mode": "median"})


# ---- max_unpool ----------------------------------------------------------------------------
def test_max_unpool_inverts_max_pool():
    x = f32(2, 3, 6, 8)
    attrs = {"kernel_shape": (2, 2), "strides": (2, 2)}
    y, idx = run_on("max_pool", x, attrs={**attrs, "indices": True}, num_outputs=2)
    up = run_on("max_unpool", y, idx, attrs=attrs)
    assert up.shape == x.shape
    # each maximum returns to its place; everything else is zero
    keep = np.zeros(x.size, bool)
    keep[idx.reshape(-1)] = True
    np.testing.assert_array_equal(up.reshape(-1), np.where(keep, x.reshape(-1), 0))


def test_max_unpool_output_shape():
    x = np.array([[[[5, 6], [7, 8]]]], np.float32)
    idx = np.array([[[[5, 7], [13, 15]]]], np.int64)   # positions in the default 4 x 4 output
    attrs = {"kernel_shape": (2, 2), "strides": (2, 2)}
    got = run_on("max_unpool", x, idx, np.array([1, 1, 5, 5], np.int64), attrs=attrs)
    want = np.zeros((1, 1, 5, 5), np.float32)
    want[0, 0, 1, 1], want[0, 0, 1, 3], want[0, 0, 3, 1], want[0, 0, 3, 3] = 5, 6, 7, 8
    np.testing.assert_array_equal(got, want)
    # a non-constant output_shape gives fresh symbols for the spatial dims
    t = infer("max_unpool", [TensorType((1, 1, 2, 2), "float32"), idx, TensorType((4,), "int64")], attrs)
    assert t.shape[:2] == (1, 1) and not any(is_static_dim(d) for d in t.shape[2:])
    with pytest.raises(ShapeError, match="max_unpool.*int64"):
        infer("max_unpool", [TensorType((1, 1, 2, 2), "float32"), idx.astype(np.int32)], attrs)
    with pytest.raises(ShapeError, match="max_unpool.*batch and channel"):
        infer("max_unpool", [TensorType((1, 1, 2, 2), "float32"), idx, np.array([1, 2, 5, 5], np.int64)], attrs)
    with pytest.raises(irgraph.IrgraphError, match="max_unpool.*outside"):
        run_on("max_unpool", x, idx * 3, attrs=attrs)


# ---- max_roi_pool --------------------------------------------------------------------------
def test_max_roi_pool_hand_computed():
    x = np.arange(32, dtype=np.float32).reshape(2, 1, 4, 4)
    rois = np.array([[0, 0, 0, 3, 3], [1, 1, 1, 2, 2], [0, 2, 0, 6, 8]], np.float32)
    y = run_on("max_roi_pool", x, rois, attrs={"pooled_shape": (2, 2)})
    assert y.shape == (3, 1, 2, 2)
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(y[1, 0], [[21, 22], [25, 26]])
    # the third roi (9 x 5, bins 4.5 x 2.5) reaches past the image: its bins are clipped to
    # rows 0..3, cols 2..3, and the bins left empty are 0
    np.testing.assert_array_equal(y[2, 0], [[15, 0], [0, 0]])
    # spatial_scale maps roi coordinates onto the feature map
    y = run_on("max_roi_pool", x, rois[:1] * np.array([1, 2, 2, 2, 2], np.float32),
            attrs={"pooled_shape": (1, 1), "spatial_scale": 0.5})
    assert y.reshape(-1).tolist() == [15.0]
    with pytest.raises(ShapeError, match="max_roi_pool.*rois"):
        infer("max_roi_pool", [TensorType((1, 1, 4, 4), "float32"), np.zeros((2, 4), np.float32)],
              {"pooled_shape": (2, 2)})


# ---- ONNX converters -----------------------------------------------------------------------
def test_onnx_pool_auto_pad_kept_for_symbolic_shapes():
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[3, 3], strides=[2, 2],
                            auto_pad="SAME_LOWER")
    m = onnx_model(node, [value_info("x", shape=["N", 2, "H", "W"])],
                   [value_info("y"), value_info("i", TensorProto.INT64)])
    (n,) = import_model(m).nodes
    assert n.attrs["auto_pad"] == "SAME_LOWER" and n.attrs["indices"]
    x = f32(2, 2, 5, 6)
    y, i = irgraph.compile(m)(x)
    # H 5: total pad 2 -> (1, 1); W 6: total pad 1, the odd one at the start -> (1, 0)
    want = naive_pool(x, (3, 3), lambda v, *_: v.max(-1), (2, 2), (1, 1, 1, 0), fill=-np.inf)
    np.testing.assert_array_equal(y, want.astype(np.float32))
    np.testing.assert_array_equal(x.reshape(-1)[i], y)


def test_onnx_global_pools():
    x = f32(1, 2, 4, 4)
    for op, fn in (("GlobalAveragePool", np.mean), ("GlobalMaxPool", np.max)):
        m = onnx_model(helper.make_node(op, ["x"], ["y"]), [value_info("x", shape=["N", 2, 3, 3])],
                       [value_info("y")])
        np.testing.assert_allclose(irgraph.compile(m)(x[:, :, :3, :3]),
                                   fn(x[:, :, :3, :3], axis=(2, 3), keepdims=True), rtol=1e-6)
