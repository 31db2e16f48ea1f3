"""Lowering of the quantized ops (``quant_matmul``, ``quant_conv``, ``quant_add``) to the CPU's
int8 kernels.

    quant_matmul: x (..., M, K) rows are A directly (copied once, zero-padded, when K is not a
                  multiple of 4 or the rows are strided); w packed at compile time.
    quant_conv:   x (N, C, H, W) is stored once as a padded NHWC image (``qpack``: padding =
                  the activation zero point, int8 flipped to uint8); the GEMM reads each output
                  pixel's window straight from it through a table of row offsets (one per pixel)
                  and tap offsets (one per kernel row, or per kernel position when dilated
                  along W): an implicit GEMM, no im2col. Its (pixels, channels) result is
                  transposed into the NCHW output (``qunpack``).
    quant_add:    one vector loop over the bytes (``qadd``).

The GEMM is one ``ExternCall("qgemm")`` whose epilogue (zero-point correction, multiplier,
biases, activation, requantization) runs on the accumulators in registers. What the kernels
cannot take (weights known only at run time, asymmetric weights, grouped or non-2-D
convolutions, parameters known only at run time, backends without these templates) lowers
through the op's registry decomposition into integer ops instead. 8-bit ``max_pool`` and
float32 ``dynamic_quantize_linear`` and per-tensor float32 -> 8-bit ``quantize_linear`` get
vector kernels too (``qmaxpool``, ``qdql``, ``qquant``): their rules wrap the generic ones,
which keep every other case.

Importing this module registers the rules and teaches the CPU code generator these templates
(``backends/cpu/qgemm_codegen.py``, kernels in ``gemm_int8.py`` and ``qlayout.py``).
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.ops import qlinear  # noqa: F401  (registers quant_matmul / quant_conv)
from irgraph.ops.quant import conv_geometry

from . import lower_ops
from .kernel_ir import Const, ExternCall, IRBuilder
from .lower_tensor import Generic, Map, Pending, View, iclamp, iconst, numel

_b = IRBuilder()


def _known(v):
    if v is None:
        return None
    a = v.const if v.const is not None else v.meta.get("value")
    return None if a is None else np.asarray(a)


def _node_input(n, i):
    return n.inputs[i] if i < len(n.inputs) else None


class _Plan:
    """What the fast path needs from a quant node, or the reason it cannot be taken."""

    def __init__(self, ctx, n, conv: bool):
        self.reason = None
        from .cpu.codegen import CpuTemplates
        if not isinstance(ctx.templates, CpuTemplates):
            self.reason = "no int8 GEMM template on this backend"
            return
        w = _known(_node_input(n, 2))
        if w is None:
            self.reason = "weights known only at run time"
            return
        wz = _known(_node_input(n, 3))
        if _node_input(n, 3) is not None and wz is None:
            self.reason = "weight zero point known only at run time"
            return
        yz_v = _node_input(n, 7)
        self.yz = _known(yz_v)
        if yz_v is not None and self.yz is None:
            self.reason = "output zero point known only at run time"
            return
        # uint8 weights become int8 (w - 128, zero point - 128): the kernel multiplies u8 x s8
        ws = w.astype(np.int16)
        z = np.zeros(1, np.int16) if wz is None else wz.astype(np.int16).reshape(-1)
        if w.dtype == np.uint8:
            ws, z = ws - 128, z - 128
        if np.any(z != 0):
            self.reason = "asymmetric weights (a nonzero weight zero point)"
            return
        self.w = ws.astype(np.int8)
        if conv:
            if self.w.ndim != 4:
                self.reason = "only 2-D convolutions have an int8 kernel"
            elif n.attrs["group"] != 1:
                self.reason = "grouped convolutions have no int8 kernel"
        elif self.w.ndim != 2:
            self.reason = "weights are not a matrix"


def _fallback(ctx, n, ins):
    from .lower import _lower_decomposed
    return _lower_decomposed(ctx, n, ins, 0)


def _scalar_i32_buffer(c, t, add: int, name: str):
    """A one-element int32 buffer holding ``t`` (a scalar of any int type, or None = 0) + add."""
    buf = c.buffer(name, dt.int32, (1,), "temp")
    dest = View.of(buf, c)
    if t is None:
        val = Generic((1,), dt.int32, c, lambda idx: Const(add, dt.int32), 0)
    else:
        s = t.reshape(()).broadcast_to((1,)) if t.size == 1 else t
        val = Map(lambda b, v: b.add(b.cast(v, dt.int32), Const(add, dt.int32)), [s], {}, (1,), t.dtype, c,
                  out_dtype=dt.int32)
    c.store(val, dest)
    return buf


def _channel_buffer(c, n, ins, i, N: int, dtype, name: str):
    """Input ``i`` (scalar or (N,)) as an N-element buffer of ``dtype``: a const when it is known,
    else stored at run time. None when the input is absent."""
    v = _node_input(n, i)
    if v is None:
        return None, 0
    a = _known(v)
    if a is not None:
        data = np.ascontiguousarray(np.broadcast_to(a.reshape(-1) if a.size > 1 else a.reshape(()), (N,)),
                                    dtype.np)
        view = c.const(data, name)
        if not isinstance(view, View):     # a single element: Fill; keep it in a buffer anyway
            buf = c.buffer(name, dtype, (N,), "const", data)
            return buf, 0
        return view.buf, view.offset
    t = ins[i]
    t = t.reshape(()).broadcast_to((N,)) if t.size == 1 else t.reshape((N,))
    if t.dtype is not dtype:
        t = Map(lambda b, x: b.cast(x, dtype), [t], {}, (N,), t.dtype, c, out_dtype=dtype)
    view = c.force(t)
    if not view.contiguous:
        buf = c.buffer(name, dtype, (N,), "temp")
        c.store(Generic((N,), dtype, c, view.at, 0), View.of(buf, c))
        return buf, 0
    return view.buf, view.offset


def _epilogue_args(c, n, ins, N: int):
    """colsum-independent epilogue buffers: multiplier, acc_bias, bias, params; and the output kind."""
    from .cpu.gemm_int8 import activation_params
    a = n.attrs
    mult = _channel_buffer(c, n, ins, 4, N, dt.float32, "qmult")
    ibias = _channel_buffer(c, n, ins, 5, N, dt.int32, "qacc_bias")
    fbias = _channel_buffer(c, n, ins, 6, N, dt.float32, "qbias")
    odt = n.outputs[0].dtype
    out = {dt.float32: "f32", dt.uint8: "u8", dt.int8: "s8"}[odt]
    yz = _known(_node_input(n, 7))
    alpha, beta = activation_params(a["activation"], a["alpha"], a["beta"])
    params = np.array([a["output_scale"], alpha, beta, 0.0 if yz is None else float(yz.reshape(-1)[0])],
                      np.float32)
    pbuf = c.buffer("qparams", dt.float32, (4,), "const", params)
    return mult, ibias, fbias, (pbuf, 0), out


def _qgemm(c, n, A, a_off, lda, rowoff, tapoff, T, KG, W, C, c_off, ldc, M, N, xzp_buf, a_signed, ins):
    """Append the ExternCall for one int8 GEMM; W is the (T*KG*4, N) int8 weight matrix."""
    from .cpu.gemm_int8 import QGemmConfig, pack_b
    cfg = QGemmConfig.for_host()
    colsum = W.astype(np.int64).sum(axis=0).astype(np.int32)
    bp = pack_b(W, cfg)
    bbuf = c.buffer(n.name + "_wq", dt.int8 if bp.dtype == np.int8 else dt.int16, bp.shape, "const", bp)
    csbuf = c.buffer("qcolsum", dt.int32, colsum.shape, "const", colsum)
    mult, ibias, fbias, params, out = _epilogue_args(c, n, ins, N)
    args = [(A, a_off), rowoff, tapoff, (bbuf, 0), (C, c_off), (csbuf, 0), (xzp_buf, 0), None, mult,
            ibias, fbias, params]
    c.body.append(ExternCall("qgemm", [None if x is None or x[0] is None else x[0] for x in args], {
        "offsets": [0 if x is None or x[0] is None else x[1] for x in args],
        "lda": lda, "T": T, "KG": KG, "ldc": ldc, "M": M, "N": N, "out": out,
        "activation": n.attrs["activation"], "a_signed": a_signed}))


def rule_quant_matmul(ctx, n, ins):
    plan = _Plan(ctx, n, conv=False)
    if plan.reason:
        return _fallback(ctx, n, ins)
    x = ins[0]
    shape, odt = n.outputs[0].type.shape, n.outputs[0].dtype
    W = plan.w
    K, N = W.shape
    if x.rank == 1:
        x = x.reshape((1, K))
    M = numel(x.shape[:-1])
    K4 = -(-K // 4) * 4
    signed = x.dtype is dt.int8

    def emit(c, dest):
        X = c.force(x)
        rows = X.try_reshape((M, K))
        direct = rows is not None and K == K4 and rows.strides[1] == 1 and (M == 1 or rows.strides[0] >= K)
        if direct:
            A, a_off, lda, a_signed = rows.buf, rows.offset, (rows.strides[0] if M > 1 else K), signed
        else:
            # rows copied once: contiguous, K zero-padded to a multiple of 4, int8 flipped to uint8
            buf = c.buffer("qrows", dt.uint8, (M, K4), "temp")
            src = X.reshape((M, K))

            def fn(idx):
                i, k = idx
                v = src.at([i, iclamp(k, 0, K - 1)])
                u = _b.cast(_b.add(_b.cast(v, dt.int32), Const(128 if signed else 0, dt.int32)), dt.uint8)
                return _b.select(_b.lt(k, iconst(K)), u, Const(0, dt.uint8))
            c.store(Generic((M, K4), dt.uint8, c, fn, 3), View.of(buf, c))
            A, a_off, lda, a_signed = buf, 0, K4, False
        xzp = _scalar_i32_buffer(c, ins[1], 128 if signed else 0, "qxzp")
        Wp = np.zeros((K4, N), np.int8)
        Wp[:K] = W
        out = dest.try_reshape((M, N))
        if out is None or not out.contiguous:
            tmp = View.of(c.buffer("qout", odt, (M, N), "temp"), c)
            _qgemm(c, n, A, a_off, lda, None, None, 1, K4 // 4, Wp, tmp.buf, 0, N, M, N, xzp, a_signed, ins)
            c.store(Generic(dest.shape, odt, c, tmp.reshape(dest.shape).at, 0), dest)
            return
        _qgemm(c, n, A, a_off, lda, None, None, 1, K4 // 4, Wp, out.buf, out.offset, N, M, N, xzp, a_signed, ins)
    return [Pending(shape, odt, ctx, emit, "quant_matmul")]


def rule_quant_conv(ctx, n, ins):
    plan = _Plan(ctx, n, conv=True)
    if plan.reason:
        return _fallback(ctx, n, ins)
    x = ins[0]
    shape, odt = n.outputs[0].type.shape, n.outputs[0].dtype
    W = plan.w                                   # (M, C, kh, kw) int8
    Mo, C, kh, kw = W.shape
    Nb, _, H, Wd = x.shape
    outs, pb, _pe, strides, dil = conv_geometry((H, Wd), (kh, kw), n.attrs)
    OH, OW = outs
    # the padded image holds every window and the whole input (qpack copies whole input rows:
    # a strided conv whose windows end before the input does, e.g. 1x1 stride 2 over 14x14,
    # would otherwise have its last input column and row written past the image)
    Hp = max((OH - 1) * strides[0] + (kh - 1) * dil[0] + 1, pb[0] + H)
    Wp = max((OW - 1) * strides[1] + (kw - 1) * dil[1] + 1, pb[1] + Wd)
    signed = x.dtype is dt.int8
    rows = dil[1] == 1
    # rows: a kernel row's kw pixels are adjacent in the NHWC image, so each kernel row is one
    # "tap" of kw*C bytes, padded to whole groups of 4 in the weights only (the 7x7 stem over 3
    # channels: 7 taps of 6 groups, where a 4-channel image would take 7 taps of 7 and one tap
    # per kernel position 49 taps of 1). Otherwise one tap per position, channels padded to 4.
    Cp = C if rows else -(-C // 4) * 4
    per_tap = kw * C if rows else Cp
    KG = -(-per_tap // 4)
    Wk = np.zeros((kh, kw, Cp, Mo), np.int8)
    Wk[:, :, :C, :] = W.transpose(2, 3, 1, 0)
    if rows:
        T = kh
        Wk = np.concatenate([Wk.reshape(kh, kw * C, Mo), np.zeros((kh, KG * 4 - kw * C, Mo), np.int8)], axis=1)
        tapoff = (np.arange(kh) * dil[0] * Wp * Cp).astype(np.int64)
    else:
        T = kh * kw
        ti, tj = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
        tapoff = ((ti * dil[0] * Wp + tj * dil[1]) * Cp).reshape(-1).astype(np.int64)
    Wk = Wk.reshape(T * KG * 4, Mo)
    P = Nb * OH * OW
    n_, oh, ow = np.meshgrid(np.arange(Nb), np.arange(OH), np.arange(OW), indexing="ij")
    rowoff = (((n_ * Hp + oh * strides[0]) * Wp + ow * strides[1]) * Cp).reshape(-1).astype(np.int64)
    # the last group of a row may read up to 3 bytes past the window (times zero weights):
    # slack after the image keeps them inside the buffer
    slack = KG * 4 - per_tap

    def emit(c, dest):
        xzp = _scalar_i32_buffer(c, ins[1], 128 if signed else 0, "qxzp")
        X = _contiguous(c, x)
        # the padded NHWC image: x where the windows read the input, the zero point elsewhere
        img = c.buffer("qnhwc", dt.uint8, (Nb * Hp * Wp * Cp + slack,), "temp")
        c.body.append(ExternCall("qpack", [X.buf, img, xzp], {
            "offsets": [X.offset, 0, 0], "ints": [Nb, C, H, Wd, Hp, Wp, Cp, pb[0], pb[1]], "flip": signed}))
        rbuf = c.buffer("qrowoff", dt.int64, rowoff.shape, "const", rowoff)
        tbuf = c.buffer("qtapoff", dt.int64, tapoff.shape, "const", tapoff)
        tmp = c.buffer("qpix", odt, (P, Mo), "temp")
        _qgemm(c, n, img, 0, 0, (rbuf, 0), (tbuf, 0), T, KG, Wk, tmp, 0, Mo, P, Mo, xzp, False, ins)
        out = dest if dest.contiguous else View.of(c.buffer("qnchw", odt, dest.shape, "temp"), c)
        c.body.append(ExternCall("qunpack", [tmp, out.buf], {
            "offsets": [0, out.offset], "ints": [Nb, OH * OW, Mo], "esize": odt.itemsize}))
        if out is not dest:
            c.store(Generic(dest.shape, odt, c, out.at, 0), dest)
    return [Pending(shape, odt, ctx, emit, "quant_conv")]


def _contiguous(c, t) -> View:
    from .cpu.extern_operands import dense_input
    return dense_input(c, t, "qcont")


def rule_quant_add(ctx, n, ins):
    """Q(act(DQ(a) + DQ(b))) as one vector loop over bytes (qlayout.emit_add)."""
    from .cpu.codegen import CpuTemplates
    shape, odt = n.outputs[0].type.shape, n.outputs[0].dtype
    vals = [_known(_node_input(n, i)) for i in (1, 2, 4, 5, 6, 7)]
    a, b = ins[0], ins[3]
    if (not isinstance(ctx.templates, CpuTemplates) or any(v is None for v in vals)
            or tuple(a.shape) != tuple(shape) or tuple(b.shape) != tuple(shape)):
        return _fallback(ctx, n, ins)
    params = np.array([float(np.asarray(v).reshape(())) for v in vals], np.float32)

    def emit(c, dest):
        A, Bv = _contiguous(c, a), _contiguous(c, b)
        out = dest if dest.contiguous else View.of(c.buffer("qadd", odt, dest.shape, "temp"), c)
        pbuf = c.buffer("qadd_params", dt.float32, (6,), "const", params)
        c.body.append(ExternCall("qadd", [A.buf, Bv.buf, out.buf, pbuf], {
            "offsets": [A.offset, Bv.offset, out.offset, 0], "ints": [numel(shape)],
            "a_signed": a.dtype is dt.int8, "b_signed": b.dtype is dt.int8, "y_signed": odt is dt.int8,
            "relu": n.attrs["activation"] == "relu"}))
        if out is not dest:
            c.store(Generic(dest.shape, odt, c, out.at, 0), dest)
    return [Pending(shape, odt, ctx, emit, "quant_add")]


def rule_max_pool_int8(base):
    """max_pool of 8-bit NCHW tensors (2-D, no dilation, no indices) on the qmaxpool kernel;
    everything else goes on to ``base``, the generic rule."""
    def rule(ctx, n, ins):
        from irgraph.ops.windows import raiser, window_plan

        from .cpu.codegen import CpuTemplates
        x = ins[0]
        a = n.attrs
        if (x.dtype not in (dt.uint8, dt.int8) or x.rank != 4 or a.get("indices") or a.get("ceil_mode")
                or not isinstance(ctx.templates, CpuTemplates)):
            return base(ctx, n, ins)
        kernel = tuple(a["kernel_shape"])
        plan = window_plan(x.shape[2:], kernel, a, raiser(n.op))
        if any(d != 1 for d in plan.dilations) or plan.strides[1] > 4:
            return base(ctx, n, ins)
        shape = n.outputs[0].type.shape

        def emit(c, dest):
            X = _contiguous(c, x)
            out = dest if dest.contiguous else View.of(c.buffer("qpool", x.dtype, dest.shape, "temp"), c)
            N_, C_, H, W = x.shape
            c.body.append(ExternCall("qmaxpool", [X.buf, out.buf], {
                "offsets": [X.offset, out.offset], "signed": x.dtype is dt.int8, "sw": plan.strides[1],
                "ints": [N_ * C_, H, W, shape[2], shape[3], kernel[0], kernel[1], plan.strides[0],
                         plan.pads_begin[0], plan.pads_begin[1]]}))
            if out is not dest:
                c.store(Generic(dest.shape, x.dtype, c, out.at, 0), dest)
        return [Pending(shape, x.dtype, ctx, emit, "max_pool")]
    rule.int8_wrapper = True
    return rule


def rule_dynamic_quantize_int8(base):
    """dynamic_quantize_linear of a float32 tensor on the qdql kernel (one range pass, one
    vectorized quantizing pass); other backends go on to ``base``."""
    def rule(ctx, n, ins):
        from .cpu.codegen import CpuTemplates
        x = ins[0]
        if x.dtype is not dt.float32 or not isinstance(ctx.templates, CpuTemplates) or x.size == 0:
            return base(ctx, n, ins)
        shape = x.shape
        scale = View.of(ctx.buffer("qdql_scale", dt.float32, (), "temp"), ctx)
        zp = View.of(ctx.buffer("qdql_zp", dt.uint8, (), "temp"), ctx)

        def emit(c, dest):
            X = _contiguous(c, x)
            out = dest if dest.contiguous else View.of(c.buffer("qdql", dt.uint8, shape, "temp"), c)
            c.body.append(ExternCall("qdql", [X.buf, out.buf, scale.buf, zp.buf], {
                "offsets": [X.offset, out.offset, 0, 0], "ints": [numel(shape)]}))
            if out is not dest:
                c.store(Generic(dest.shape, dt.uint8, c, out.at, 0), dest)
        y = ctx.force(Pending(shape, dt.uint8, ctx, emit, "dynamic_quantize_linear"))
        return [y, scale, zp]
    rule.int8_wrapper = True
    return rule


def rule_quantize_int8(base):
    """quantize_linear of a float32 tensor to uint8/int8 with one known float32 scale and zero
    point on the qquant vector kernel (the generic loop's 8-bit stores stay scalar); per-axis,
    blocked, float8 and other-precision cases go on to ``base``."""
    def rule(ctx, n, ins):
        from .cpu.codegen import CpuTemplates
        x, odt = ins[0], n.outputs[0].dtype
        s_v, z_v = _node_input(n, 1), _node_input(n, 2)
        s, z = _known(s_v), _known(z_v)
        if (x.dtype is not dt.float32 or odt not in (dt.uint8, dt.int8) or x.size == 0
                or not isinstance(ctx.templates, CpuTemplates) or s is None or s.size != 1
                or s.dtype != np.float32 or (z_v is not None and (z is None or z.size != 1))
                or n.attrs.get("precision") not in (None, dt.float32)):
            return base(ctx, n, ins)
        shape = n.outputs[0].type.shape
        params = np.array([s.reshape(()), 0.0 if z is None else z.reshape(())], np.float32)

        def emit(c, dest):
            X = _contiguous(c, x)
            out = dest if dest.contiguous else View.of(c.buffer("qquant", odt, shape, "temp"), c)
            pbuf = c.buffer("qquant_params", dt.float32, (2,), "const", params)
            c.body.append(ExternCall("qquant", [X.buf, out.buf, pbuf], {
                "offsets": [X.offset, out.offset, 0], "ints": [numel(shape)], "signed": odt is dt.int8}))
            if out is not dest:
                c.store(Generic(dest.shape, odt, c, out.at, 0), dest)
        return [Pending(shape, odt, ctx, emit, "quantize_linear")]
    rule.int8_wrapper = True
    return rule


RULES: dict = {"quant_matmul": rule_quant_matmul, "quant_conv": rule_quant_conv, "quant_add": rule_quant_add}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table and the qgemm template to the CPU code
    generator."""
    table = lower_ops.rules() if table is None else table
    table.update(RULES)
    # 8-bit max pooling and run-time quantization get vector kernels; every other case of
    # these two ops goes on to the generic rule
    if not getattr(table.get("max_pool"), "int8_wrapper", False):
        table["max_pool"] = rule_max_pool_int8(table["max_pool"])
    if not getattr(table.get("dynamic_quantize_linear"), "int8_wrapper", False):
        table["dynamic_quantize_linear"] = rule_dynamic_quantize_int8(table["dynamic_quantize_linear"])
    if not getattr(table.get("quantize_linear"), "int8_wrapper", False):
        table["quantize_linear"] = rule_quantize_int8(table["quantize_linear"])
    from .cpu import qgemm_codegen
    qgemm_codegen.install()


register()
