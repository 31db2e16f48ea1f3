"""Image ops: resize, grid_sample, affine_grid, roi_align, non_max_suppression (decoding
encoded images is in ``image_codecs.py``).

Shape-like operands (resize scales/sizes/roi, the affine grid's output size, the NMS limits)
are tensor inputs as in the newest ONNX opsets; inference reads them when they are known at
compile time and makes symbolic dims otherwise.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from .. import dtype as dt
from ..types import is_static_dim
from .declare import FLOAT_TYPES, INT_TYPES
from .image_grad import affine_grid_grad, grid_sample_grad, resize_grad, roi_align_grad
from .registry import Attr, OpDef, register
from .shapes import check_dtype, normalize_axes, out

_RESIZE_DTYPES = FLOAT_TYPES + INT_TYPES


def _given_type(ctx, i: int) -> bool:
    """An optional input counts as absent when missing or statically empty (ONNX passes '' or [])."""
    t = ctx.type(i)
    if t is None:
        return False
    return not (t.shape is not None and len(t.shape) == 1 and t.shape[0] == 0)


def _given(a) -> bool:
    return a is not None and np.size(a) > 0


def check_choice(ctx, name: str, choices) -> str:
    """The string attribute ``name``, which must be one of ``choices``."""
    v = ctx.attrs[name]
    if v not in choices:
        ctx.fail(f"unknown {name} {v!r}", expected=" | ".join(choices), actual=v)
    return v


def _saturate(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast a float result to ``dtype``; integers round half to even and clip, as ONNX Resize."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(y), info.min, info.max).astype(dtype)
    return y.astype(dtype)


# ---- resize ----------------------------------------------------------------------------------
_RESIZE_MODES = ("nearest", "linear", "cubic")
_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")


def _resize_plan(shape, axes, scales, sizes, policy):
    """[(axis, scale, output length)] for the resized axes; ``shape`` holds static ints."""
    if sizes is not None:
        sizes = [int(v) for v in np.asarray(sizes).ravel()]
        if policy == "stretch":
            return [(ax, (sz / shape[ax]) if shape[ax] else 1.0, sz) for ax, sz in zip(axes, sizes)]
        ratios = [sz / shape[ax] if shape[ax] else 1.0 for ax, sz in zip(axes, sizes)]
        s = min(ratios) if policy == "not_larger" else max(ratios)
        # the kept-aspect size rounds half up
        return [(ax, s, int(s * shape[ax] + 0.5)) for ax in axes]
    scales = [float(v) for v in np.asarray(scales).ravel()]
    return [(ax, s, int(math.floor(s * shape[ax]))) for ax, s in zip(axes, scales)]


def resize_geometry(shape, attrs: dict, roi, scales, sizes) -> tuple[list, list]:
    """``(plan, rois)`` of a resize of static ``shape`` with known roi/scales/sizes (None or
    empty when absent): plan as ``_resize_plan``, rois one (start, end) per resized axis, (0, 1)
    unless tf_crop_and_resize has a roi. The reference, the gradient and backends share it."""
    rank = len(shape)
    given = attrs["axes"] if attrs["axes"] is not None else range(rank)
    axes = [ax + rank if ax < 0 else ax for ax in given]
    if _given(sizes):
        plan = _resize_plan(shape, axes, None, sizes, attrs["keep_aspect_ratio_policy"])
    else:
        plan = _resize_plan(shape, axes, scales, None, "stretch")
    rois = [(0.0, 1.0)] * len(axes)
    if attrs["coordinate_transformation_mode"] == "tf_crop_and_resize" and _given(roi):
        r = np.asarray(roi, dtype=np.float64).ravel()
        k = len(axes)
        rois = [(r[i], r[k + i]) for i in range(k)]
    return plan, rois


def resize_keeps_axis(ctm: str, scale: float, m: int, length: int, roi_ax) -> bool:
    """Whether resizing an axis of ``length`` to ``m`` is the identity (scale 1, whole roi)."""
    return math.isclose(scale, 1.0) and m == length and (
        ctm != "tf_crop_and_resize" or (math.isclose(roi_ax[0], 0.0) and math.isclose(roi_ax[1], 1.0)))


def _resize_infer(ctx):
    x = check_dtype(ctx, 0, _RESIZE_DTYPES, "data")
    a = ctx.attrs
    mode = check_choice(ctx, "mode", _RESIZE_MODES)
    ctm = check_choice(ctx, "coordinate_transformation_mode", _COORD_MODES)
    check_choice(ctx, "nearest_mode", _NEAREST_MODES)
    policy = check_choice(ctx, "keep_aspect_ratio_policy", _ASPECT_POLICIES)
    if a["antialias"] and mode == "nearest":
        ctx.fail("antialias needs mode linear or cubic", expected="linear | cubic", actual=mode)
    has_scales, has_sizes = _given_type(ctx, 2), _given_type(ctx, 3)
    if has_scales == has_sizes:
        ctx.fail("exactly one of scales (input 2) and sizes (input 3) must be given",
                 expected="one", actual="both" if has_scales else "neither")
    if x.shape is None:
        return [out(None, x.dtype)]
    rank = len(x.shape)
    axes = normalize_axes(a["axes"] if a["axes"] is not None else range(rank), rank, ctx)
    if policy != "stretch" and not has_sizes:
        ctx.fail(f"keep_aspect_ratio_policy {policy!r} needs sizes, not scales", input=2)
    i = 3 if has_sizes else 2
    t = ctx.type(i)
    want_dt = (dt.int64,) if has_sizes else FLOAT_TYPES
    if t.dtype not in want_dt or t.rank != 1:
        ctx.fail(f"{'sizes' if has_sizes else 'scales'} must be a 1-D "
                 f"{'int64' if has_sizes else 'float'} tensor", input=i,
                 expected=f"{want_dt[0].name}[{len(axes)}]", actual=t)
    if is_static_dim(t.shape[0]) and t.shape[0] != len(axes):
        ctx.fail(f"{'sizes' if has_sizes else 'scales'} needs one entry per resized axis", input=i,
                 expected=len(axes), actual=t.shape[0])
    if ctm == "tf_crop_and_resize" and _given_type(ctx, 1):
        r = ctx.type(1)
        if r.rank != 1 or not r.dtype.is_float:
            ctx.fail("roi must be a 1-D float tensor", input=1, expected=f"float[{2 * len(axes)}]", actual=r)
        if is_static_dim(r.shape[0]) and r.shape[0] != 2 * len(axes):
            ctx.fail("roi needs a start and an end per resized axis", input=1,
                     expected=2 * len(axes), actual=r.shape[0])
    v = ctx.const(i)
    shape = list(x.shape)
    if v is None:
        for ax in axes:
            shape[ax] = ctx.fresh("resize")
        return [out(shape, x.dtype)]
    v = np.asarray(v).ravel()
    if has_sizes and (v < 0).any():
        ctx.fail("sizes must be non-negative", input=3, actual=tuple(int(s) for s in v))
    if not has_sizes and not (v > 0).all():
        ctx.fail("scales must be positive", input=2, actual=tuple(float(s) for s in v))
    if has_sizes and policy != "stretch":
        if all(is_static_dim(x.shape[ax]) for ax in axes):
            for ax, _, n in _resize_plan(x.shape, axes, None, v, policy):
                shape[ax] = n
        else:
            for ax in axes:
                shape[ax] = ctx.fresh("resize")
        return [out(shape, x.dtype)]
    for ax, s in zip(axes, v):
        length = x.shape[ax]
        if has_sizes:
            shape[ax] = int(s)
        elif is_static_dim(length):
            shape[ax] = _resize_plan(x.shape, [ax], [s], None, "stretch")[0][2]
        else:
            shape[ax] = length if float(s) == 1.0 else ctx.fresh("resize")
    return [out(shape, x.dtype)]


def _source_coords(ctm, m, length, scale, roi):
    """Where output positions 0..m-1 of one axis sample the input; also a mask of positions
    outside the input (only tf_crop_and_resize extrapolates)."""
    y = np.arange(m, dtype=np.float64)
    # align_corners and tf_crop_and_resize divide by the unrounded output length scale * length,
    # as ONNX's reference does (it decides the expected values of downsampling by scales)
    width = scale * length
    outside = None
    if ctm == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel_symmetric":
        offset = length / 2 * (1 - m / width)
        x = offset + (y + 0.5) / scale - 0.5
    elif ctm == "pytorch_half_pixel":
        x = (y + 0.5) / scale - 0.5 if m > 1 else np.zeros(m)
    elif ctm == "align_corners":
        x = y * (length - 1) / (width - 1) if width != 1 else np.zeros(m)
    elif ctm == "asymmetric":
        x = y / scale
    elif ctm == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    else:  # tf_crop_and_resize
        start, end = roi
        if width != 1:
            x = start * (length - 1) + y * (end - start) * (length - 1) / (width - 1)
        else:
            x = np.full(m, 0.5 * (start + end) * (length - 1))
        outside = (x < 0) | (x > length - 1)
    return x, outside


def _nearest_index(x, nearest_mode, length):
    fl = np.floor(x)
    frac = x - fl
    if nearest_mode == "round_prefer_floor":
        i = np.where(frac <= 0.5, fl, fl + 1)
    elif nearest_mode == "round_prefer_ceil":
        i = np.where(frac < 0.5, fl, fl + 1)
    elif nearest_mode == "floor":
        i = fl
    else:
        i = np.ceil(x)
    return np.clip(i, 0, length - 1).astype(np.intp)


def _cubic_kernel(t, a):
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _interp_taps(x, length, mode, scale, cubic_a, antialias, exclude_outside):
    """Input indices (m, n) and weights (m, n) of a linear or cubic filter at positions ``x``."""
    radius = 1 if mode == "linear" else 2
    # an antialiasing filter stretches by 1/scale when downsampling
    s = min(scale, 1.0) if antialias else 1.0
    n = 2 * radius if s == 1.0 else 2 - 2 * (math.floor(-radius / s) + 1)
    # the n input positions nearest x, preferring lower ones on ties
    first = np.ceil(x).astype(np.int64) - n // 2
    j = first[:, None] + np.arange(n)[None, :]
    t = (j - x[:, None]) * s
    w = np.clip(1 - np.abs(t), 0, 1) if mode == "linear" else _cubic_kernel(t, cubic_a)
    if antialias:
        w = w / w.sum(axis=1, keepdims=True)
    if exclude_outside:
        w = np.where((j < 0) | (j >= length), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return np.clip(j, 0, length - 1).astype(np.intp), w


def _resize_ref(ins, a):
    ins = list(ins) + [None] * (4 - len(ins))
    x, roi, scales, sizes = ins[:4]
    plan, rois = resize_geometry(x.shape, a, roi, scales, sizes)
    ctm = a["coordinate_transformation_mode"]
    mode = a["mode"]
    y = x if mode == "nearest" else x.astype(np.float64)
    for (ax, scale, m), roi_ax in zip(plan, rois):
        length = y.shape[ax]
        if resize_keeps_axis(ctm, scale, m, length, roi_ax):
            continue
        if m == 0 or length == 0:
            shape = list(y.shape)
            shape[ax] = m
            y = np.zeros(shape, y.dtype)
            continue
        src, outside = _source_coords(ctm, m, length, scale, roi_ax)
        if mode == "nearest":
            y = np.take(y, _nearest_index(src, a["nearest_mode"], length), axis=ax)
        else:
            idx, w = _interp_taps(src, length, mode, scale, a["cubic_coeff_a"], a["antialias"],
                                  a["exclude_outside"])
            bshape = [1] * y.ndim
            bshape[ax] = m
            acc = None
            # a gather per tap (not a dense matrix) so that only the taps' values take part,
            # as in the definition: a far-away inf must not turn the whole row into nan
            for k in range(idx.shape[1]):
                term = np.take(y, idx[:, k], axis=ax) * w[:, k].reshape(bshape)
                acc = term if acc is None else acc + term
            y = acc
        if outside is not None and outside.any():
            mshape = [1] * y.ndim
            mshape[ax] = m
            fill = a["extrapolation_value"]
            if y.dtype.kind != "f":
                fill = _saturate(np.array(fill), y.dtype)
            y = np.where(outside.reshape(mshape), fill, y)
    return _saturate(np.asarray(y), x.dtype) if y.dtype != x.dtype else y


register(OpDef(
    "resize", infer=_resize_infer, reference=_resize_ref, inputs=(1, 4), kind="other",
    differentiable=True, grad=resize_grad,
    attrs={
        "mode": Attr("str", "nearest", "nearest | linear | cubic"),
        "coordinate_transformation_mode": Attr("str", "half_pixel", " | ".join(_COORD_MODES)),
        "nearest_mode": Attr("str", "round_prefer_floor", " | ".join(_NEAREST_MODES)),
        "cubic_coeff_a": Attr("float", -0.75),
        "exclude_outside": Attr("bool", False, "zero the weights of taps outside the input"),
        "extrapolation_value": Attr("float", 0.0, "fill for tf_crop_and_resize outside the input"),
        "antialias": Attr("bool", False, "widen linear/cubic filters by 1/scale when downsampling"),
        "axes": Attr("ints", None, "the axes scales/sizes/roi refer to; all axes by default"),
        "keep_aspect_ratio_policy": Attr("str", "stretch", " | ".join(_ASPECT_POLICIES)),
    },
    doc="resize(x, roi?, scales?, sizes?) with ONNX Resize semantics, one axis at a time",
))


# ---- grid_sample -----------------------------------------------------------------------------
def _grid_sample_infer(ctx):
    x = check_dtype(ctx, 0, FLOAT_TYPES, "data")
    g = check_dtype(ctx, 1, FLOAT_TYPES, "grid")
    check_choice(ctx, "mode", ("linear", "nearest", "cubic"))
    check_choice(ctx, "padding_mode", ("zeros", "border", "reflection"))
    if x.shape is None or g.shape is None:
        return [out(None, x.dtype)]
    if x.rank < 3:
        ctx.fail("data must be (N, C, D1, ...)", input=0, expected="rank >= 3", actual=x.rank)
    if g.rank != x.rank:
        ctx.fail("grid must be (N, O1, ..., Or, r) with r the spatial rank of data", input=1,
                 expected=f"rank {x.rank}", actual=g.rank)
    r = x.rank - 2
    if is_static_dim(g.shape[-1]) and g.shape[-1] != r:
        ctx.fail("the grid's last dim must equal the number of spatial dims", input=1,
                 expected=r, actual=g.shape[-1])
    n = x.shape[0]
    if is_static_dim(n) and is_static_dim(g.shape[0]) and n != g.shape[0]:
        ctx.fail("data and grid batch sizes differ", input=1, expected=n, actual=g.shape[0])
    if not is_static_dim(n):
        n = g.shape[0]
    return [out((n, x.shape[1]) + tuple(g.shape[1:-1]), x.dtype)]


def _reflect(v, lo, hi):
    """Mirror ``v`` into [lo, hi] by repeated reflection at the borders."""
    span = hi - lo
    if span <= 0:
        return np.full_like(v, lo)
    below = v < lo
    d = np.where(below, lo - v, v - hi)
    k = np.floor(d / span)
    rem = d - k * span
    even = (k % 2) == 0
    inside = np.where(below, np.where(even, lo + rem, hi - rem), np.where(even, hi - rem, lo + rem))
    return np.where((v < lo) | (v > hi), inside, v)


def _grid_sample_ref(ins, a):
    x, grid = ins
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    r = len(spatial)
    out_spatial = grid.shape[1:-1]
    # coordinates are computed in the grid's precision (float32 for float32 grids, as ORT does),
    # which decides ties in nearest rounding
    cdt = np.float64 if grid.dtype == np.float64 else np.float32
    g = grid.reshape(n, -1, r).astype(cdt)
    mode, padding, align = a["mode"], a["padding_mode"], a["align_corners"]
    taps = []
    for d, length in enumerate(spatial):
        v = g[..., r - 1 - d]  # the grid lists coordinates innermost (x) first
        if align:
            coord = (v + 1) / cdt(2) * cdt(length - 1)
            lo, hi = 0.0, float(length - 1)
        else:
            coord = ((v + 1) * cdt(length) - 1) / cdt(2)
            lo, hi = -0.5, length - 0.5
        if mode == "nearest":
            coord = np.rint(coord)
        outside = (coord < lo) | (coord > hi)
        if padding == "border":
            coord = np.where(outside, np.clip(coord, 0, length - 1), coord)
        elif padding == "reflection":
            coord = np.where(outside, _reflect(coord, cdt(lo), cdt(hi)), coord)
        coord = coord.astype(np.float64)
        if mode == "nearest":
            idx = np.trunc(coord)[..., None]
            w = np.ones_like(idx)
        else:
            f = np.floor(coord)
            t = (coord - f)[..., None]
            if mode == "linear":
                idx = f[..., None] + np.arange(2)
                w = np.concatenate([1 - t, t], axis=-1)
            else:
                idx = f[..., None] + np.arange(-1, 3)
                w = _cubic_kernel(np.concatenate([t + 1, t, 1 - t, 2 - t], axis=-1), -0.75)
        if padding == "zeros":
            valid = (idx >= 0) & (idx <= length - 1)
        else:
            valid = None
            if padding == "reflection":
                idx = np.trunc(_reflect(idx, lo, hi))
        taps.append((np.clip(idx, 0, length - 1).astype(np.intp), w, valid))
    xt = np.moveaxis(x, 1, -1)  # (N, D1, ..., Dr, C) so one gather fetches every channel
    b = np.arange(n)[:, None]
    acc = np.zeros((n, g.shape[1], c), np.float64)
    for combo in itertools.product(*[range(t[0].shape[-1]) for t in taps]):
        vals = xt[(b,) + tuple(t[0][..., k] for t, k in zip(taps, combo))].astype(np.float64)
        w = np.ones(g.shape[:2])
        ok = None
        for (_, wd, vd), k in zip(taps, combo):
            w = w * wd[..., k]
            if vd is not None:
                ok = vd[..., k] if ok is None else ok & vd[..., k]
        if ok is not None:
            vals = np.where(ok[..., None], vals, 0.0)
        acc += vals * w[..., None]
    res = np.moveaxis(acc, -1, 1).reshape((n, c) + tuple(out_spatial))
    return res.astype(x.dtype)


register(OpDef(
    "grid_sample", infer=_grid_sample_infer, reference=_grid_sample_ref, inputs=(2, 2),
    kind="other", differentiable=True, grad=grid_sample_grad,
    attrs={
        "mode": Attr("str", "linear", "linear | nearest | cubic"),
        "padding_mode": Attr("str", "zeros", "zeros | border | reflection"),
        "align_corners": Attr("bool", False, "-1 and 1 are the centers of the corner pixels"),
    },
    doc="grid_sample(x[N,C,D1..Dr], grid[N,O1..Or,r]) -> [N,C,O1..Or]",
))


# ---- affine_grid -----------------------------------------------------------------------------
def _affine_grid_infer(ctx):
    th = check_dtype(ctx, 0, FLOAT_TYPES, "theta")
    s = check_dtype(ctx, 1, (dt.int64,), "size")
    if s.shape is not None and s.rank != 1:
        ctx.fail("size must be a 1-D int64 tensor (N, C, H, W) or (N, C, D, H, W)", input=1, actual=s)
    r = None
    if th.shape is not None:
        if th.rank != 3:
            ctx.fail("theta must be (N, 2, 3) or (N, 3, 4)", input=0, actual=th)
        if is_static_dim(th.shape[1]):
            r = th.shape[1]
            if r not in (2, 3) or (is_static_dim(th.shape[2]) and th.shape[2] != r + 1):
                ctx.fail("theta must be (N, 2, 3) or (N, 3, 4)", input=0, actual=th)
    if s.shape is not None and is_static_dim(s.shape[0]):
        if s.shape[0] not in (4, 5):
            ctx.fail("size must have 4 or 5 entries", input=1, expected="4 | 5", actual=s.shape[0])
        if r is not None and s.shape[0] != r + 2:
            ctx.fail("size does not match theta's spatial rank", input=1, expected=r + 2, actual=s.shape[0])
        r = s.shape[0] - 2
    if r is None:
        return [out(None, th.dtype)]
    n = th.shape[0] if th.shape is not None else ctx.fresh("n")
    v = ctx.const(1)
    if v is None:
        return [out((n,) + tuple(ctx.fresh("grid") for _ in range(r)) + (r,), th.dtype)]
    v = [int(d) for d in np.asarray(v).ravel()]
    if any(d < 0 for d in v):
        ctx.fail("size must be non-negative", input=1, actual=tuple(v))
    if is_static_dim(n) and n != v[0]:
        ctx.fail("size[0] must equal theta's batch size", input=1, expected=n, actual=v[0])
    return [out((v[0],) + tuple(v[2:]) + (r,), th.dtype)]


def _base_coords(length: int, align: bool) -> np.ndarray:
    if length <= 1:
        return np.zeros(length)  # a single sample sits at the center
    i = np.arange(length, dtype=np.float64)
    return -1 + 2 * i / (length - 1) if align else (2 * i + 1) / length - 1


def _affine_grid_ref(ins, a):
    theta, size = ins
    dims = [int(d) for d in np.asarray(size).ravel()[2:]]
    r = len(dims)
    axes = [_base_coords(d, a["align_corners"]) for d in dims]
    mesh = np.meshgrid(*axes, indexing="ij")  # (D, H, W) order
    # homogeneous coordinates listed innermost first: (x, y, [z,] 1)
    homo = np.stack(list(mesh[::-1]) + [np.ones(dims)], axis=-1)
    grid = np.einsum("nij,...j->n...i", theta.astype(np.float64), homo)
    return grid.reshape((theta.shape[0],) + tuple(dims) + (r,)).astype(theta.dtype)


register(OpDef(
    "affine_grid", infer=_affine_grid_infer, reference=_affine_grid_ref, inputs=(2, 2),
    kind="other", differentiable=True, grad=affine_grid_grad,
    attrs={"align_corners": Attr("bool", False)},
    doc="affine_grid(theta[N,r,r+1], size[r+2]) -> sampling grid [N, D.., H, W, r] for grid_sample",
))


# ---- roi_align -------------------------------------------------------------------------------
def _roi_align_infer(ctx):
    x = check_dtype(ctx, 0, FLOAT_TYPES, "data")
    rois = check_dtype(ctx, 1, FLOAT_TYPES, "rois")
    bi = check_dtype(ctx, 2, (dt.int64, dt.int32), "batch_indices")
    check_choice(ctx, "mode", ("avg", "max"))
    check_choice(ctx, "coordinate_transformation_mode", ("half_pixel", "output_half_pixel"))
    a = ctx.attrs
    if a["output_height"] < 1 or a["output_width"] < 1:
        ctx.fail("output_height and output_width must be positive",
                 actual=(a["output_height"], a["output_width"]))
    if x.shape is not None and x.rank != 4:
        ctx.fail("data must be (N, C, H, W)", input=0, actual=x)
    if rois.shape is not None and (rois.rank != 2 or (is_static_dim(rois.shape[1]) and rois.shape[1] != 4)):
        ctx.fail("rois must be (num_rois, 4)", input=1, actual=rois)
    if bi.shape is not None and bi.rank != 1:
        ctx.fail("batch_indices must be (num_rois,)", input=2, actual=bi)
    nr = rois.shape[0] if rois.shape is not None else None
    nb = bi.shape[0] if bi.shape is not None else None
    if is_static_dim(nr) and is_static_dim(nb) and nr != nb:
        ctx.fail("rois and batch_indices disagree on the number of rois", input=2, expected=nr, actual=nb)
    num = nr if is_static_dim(nr) else nb if is_static_dim(nb) else nr or nb or ctx.fresh("rois")
    c = x.shape[1] if x.shape is not None else ctx.fresh("c")
    return [out((num, c, a["output_height"], a["output_width"]), x.dtype)]


def _roi_axis(start, size, bins: int, grid: int, length: int):
    """Bilinear taps along one axis for bins x grid samples: low/high indices, their weights."""
    p = np.arange(bins, dtype=np.float64)[:, None]
    i = np.arange(grid, dtype=np.float64)[None, :]
    bin_size = float(size) / bins
    pos = float(start) + p * bin_size + (i + 0.5) * bin_size / grid
    valid = (pos >= -1.0) & (pos <= length)
    pos = np.maximum(pos, 0.0)
    low = np.floor(pos).astype(np.int64)
    at_end = low >= length - 1
    low = np.where(at_end, length - 1, low)
    high = np.where(at_end, low, low + 1)
    frac = np.where(at_end, 0.0, pos - low)
    idx = np.stack([low, high], axis=-1)                      # (bins, grid, 2)
    w = np.stack([1 - frac, frac], axis=-1) * valid[..., None]
    return idx, w


def _roi_align_ref(ins, a):
    x, rois, batch = ins
    num = rois.shape[0]
    _, c, h, w_ = x.shape
    oh, ow = a["output_height"], a["output_width"]
    half = a["coordinate_transformation_mode"] == "half_pixel"
    res = np.zeros((num, c, oh, ow), np.float64)
    # box arithmetic in the rois' precision, as ORT does: it decides the sampling grid size
    rdt = rois.dtype.type
    scale = rdt(a["spatial_scale"])
    offset = rdt(0.5 if half else 0.0)
    for k in range(num):
        x0, y0, x1, y1 = (rois[k, j] * scale - offset for j in range(4))
        rw, rh = x1 - x0, y1 - y0
        if not half:  # malformed rois become 1x1
            rw, rh = max(rw, rdt(1)), max(rh, rdt(1))
        ratio = a["sampling_ratio"]
        gh = ratio if ratio > 0 else int(math.ceil(rh / rdt(oh)))
        gw = ratio if ratio > 0 else int(math.ceil(rw / rdt(ow)))
        if gh <= 0 or gw <= 0:
            continue
        yi, yw = _roi_axis(y0, rh, oh, gh, h)
        xi, xw = _roi_axis(x0, rw, ow, gw, w_)
        img = x[int(batch[k])].astype(np.float64)
        vals = img[:, yi[:, :, :, None, None, None], xi[None, None, None, :, :, :]]
        wts = yw[:, :, :, None, None, None] * xw[None, None, None, :, :, :]
        prod = vals * wts                                       # (C, oh, gh, 2, ow, gw, 2)
        if a["mode"] == "avg":
            res[k] = prod.sum(axis=(2, 3, 5, 6)) / max(gh * gw, 1)
        else:  # ORT's max pools the weighted corner values, not interpolated samples
            res[k] = prod.max(axis=(2, 3, 5, 6))
    return res.astype(x.dtype)


register(OpDef(
    "roi_align", infer=_roi_align_infer, reference=_roi_align_ref, inputs=(3, 3), kind="other",
    differentiable=True, grad=roi_align_grad,
    attrs={
        "mode": Attr("str", "avg", "avg | max"),
        "output_height": Attr("int", 1),
        "output_width": Attr("int", 1),
        "sampling_ratio": Attr("int", 0, "samples per bin along each axis; 0: ceil(roi size / bins)"),
        "spatial_scale": Attr("float", 1.0),
        "coordinate_transformation_mode": Attr("str", "half_pixel", "half_pixel | output_half_pixel"),
    },
    doc="roi_align(x[N,C,H,W], rois[R,4], batch_indices[R]) -> [R, C, output_height, output_width]",
))


# ---- non_max_suppression ----------------------------------------------------------------------
def _nms_infer(ctx):
    b = check_dtype(ctx, 0, FLOAT_TYPES, "boxes")
    s = check_dtype(ctx, 1, FLOAT_TYPES, "scores")
    if ctx.has(2):
        check_dtype(ctx, 2, (dt.int64,), "max_output_boxes_per_class")
    for i in (3, 4):
        if ctx.has(i):
            check_dtype(ctx, i, FLOAT_TYPES, "threshold")
    if b.shape is not None and (b.rank != 3 or (is_static_dim(b.shape[2]) and b.shape[2] != 4)):
        ctx.fail("boxes must be (batch, boxes, 4)", input=0, actual=b)
    if s.shape is not None and s.rank != 3:
        ctx.fail("scores must be (batch, classes, boxes)", input=1, actual=s)
    if b.shape is not None and s.shape is not None:
        for i, j in ((0, 0), (1, 2)):
            if is_static_dim(b.shape[i]) and is_static_dim(s.shape[j]) and b.shape[i] != s.shape[j]:
                ctx.fail("boxes and scores disagree", input=1, expected=b.shape[i], actual=s.shape[j])
    if ctx.attrs["center_point_box"] not in (0, 1):
        ctx.fail("center_point_box must be 0 or 1", actual=ctx.attrs["center_point_box"])
    return [out((ctx.fresh("nms"), 3), dt.int64)]


def _first(a, default):
    return a.ravel()[0] if _given(a) else default


def _nms_ref(ins, a):
    ins = list(ins) + [None] * (5 - len(ins))
    boxes, scores = ins[0], ins[1]
    max_out = max(int(_first(ins[2], 0)), 0)
    iou_t = _first(ins[3], boxes.dtype.type(0))
    score_t = ins[4] if _given(ins[4]) else None
    if a["center_point_box"]:
        cx, cy, w, h = (boxes[..., i] for i in range(4))
        x0, x1, y0, y1 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
    else:
        y0, x0, y1, x1 = (boxes[..., i] for i in range(4))
        x0, x1 = np.minimum(x0, x1), np.maximum(x0, x1)
        y0, y1 = np.minimum(y0, y1), np.maximum(y0, y1)
    area = (x1 - x0) * (y1 - y0)
    picked = []
    for bi in range(boxes.shape[0]):
        for ci in range(scores.shape[1]):
            if max_out == 0:
                continue
            s = scores[bi, ci]
            cand = np.arange(s.shape[0]) if score_t is None else np.nonzero(s > score_t.ravel()[0])[0]
            order = cand[np.argsort(-s[cand], kind="stable")]  # ties: lower box index first
            alive = np.ones(order.shape[0], bool)
            count = 0
            for p in range(order.shape[0]):
                if not alive[p]:
                    continue
                i = order[p]
                picked.append((bi, ci, i))
                count += 1
                if count == max_out:
                    break
                rest = order[p + 1:]
                iw = np.minimum(x1[bi, i], x1[bi, rest]) - np.maximum(x0[bi, i], x0[bi, rest])
                ih = np.minimum(y1[bi, i], y1[bi, rest]) - np.maximum(y0[bi, i], y0[bi, rest])
                inter = iw * ih
                union = area[bi, i] + area[bi, rest] - inter
                ok = (iw > 0) & (ih > 0) & (area[bi, i] > 0) & (area[bi, rest] > 0) & (union > 0)
                with np.errstate(all="ignore"):
                    iou = inter / np.where(union > 0, union, 1)
                alive[p + 1:] &= ~(ok & (iou > iou_t))
    return np.array(picked, dtype=np.int64).reshape(-1, 3)


register(OpDef(
    "non_max_suppression", infer=_nms_infer, reference=_nms_ref, inputs=(2, 5), kind="other",
    differentiable=False,
    attrs={"center_point_box": Attr("int", 0, "0: boxes are [y1, x1, y2, x2]; 1: [x_center, y_center, w, h]")},
    doc="non_max_suppression(boxes, scores, max_per_class?, iou_threshold?, score_threshold?) -> "
        "[selected, 3] int64 (batch, class, box)",
))
