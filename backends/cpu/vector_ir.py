"""LLVM IR building blocks shared by the hand-written CPU kernels (gemm, gemm_int8, sparse_gemm,
conv_direct, conv_direct_oc, pool_direct, qlayout): the scalar and pointer types, i64 arithmetic,
counted loops, internal functions, and ``VecOps``, the <L x float> operations (splats, lane masks,
masked memory of any element type, transposes, FMA and the vectorized exp/tanh/erf family behind
the epilogue activations). No libm calls: every kernel inlines its math.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import llvmlite.ir as ir

from irgraph.errors import CompileError

from . import threads

F32 = ir.FloatType()
I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

ACTIVATIONS = ("none", "relu", "clip", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu")

# Polynomial coefficients, lowest degree first. Fitted in float64 by relative-weighted least squares
# on 4000 Chebyshev nodes; the max relative error of float32 Horner evaluation is given per set.
_EXP_P = (1.0000000005920207, 1.0000000361258996, 0.49999991493036766, 0.16666420832118906,
          0.04166835803302356, 0.008374771520128346, 0.001382942059581017)   # e^r, |r|<=ln2/2: 1.1e-7
_TANH_P = (0.9999999982361957, -0.33333275348461816, 0.13331365587964733, -0.053735865079822476,
           0.02063030686320999, -0.005697522223368523)      # tanh(x)/x in x^2, |x|<=0.625: 5e-8
_ERF_P = (1.1283791471036897, -0.3761239067578165, 0.11280578874605918, -0.026720893574587762,
          0.004927419830800153, -0.0005667995109581159)     # erf(x)/x in x^2, |x|<=1: 1.5e-7
_ERFC_P = (0.5642054932275741, -0.000575914670319505, -0.2733628943235333, -0.07255683743401252,
           0.7830870090805658, -1.0597575671480777, 0.48747058954644606, 0.32273398380674534,
           -0.5664389072220062, 0.3032007511524185, -0.06042215014092741)
#          x*erfc(x)*exp(x^2) in 1/x, 1<=x<=10: 3e-7


# ----------------------------------------------------------------------------- scalars and pointers
def i64(v: int) -> ir.Constant:
    return ir.Constant(I64, int(v))


def _as_i64(v) -> ir.Value:
    return v if isinstance(v, ir.Value) else i64(v)


def imin(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def imax(b, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def round_up(b, x, m: int):
    """``x`` rounded up to a multiple of ``m`` (x >= 0)."""
    return b.mul(b.sdiv(b.add(x, i64(m - 1)), i64(m)), i64(m))


def fptr(b, p, idx, ety=F32):
    """``&p[idx]`` (no inbounds: some pointers here are NULL or point past a tile's rows)."""
    return b.gep(p, [_as_i64(idx)], source_etype=ety)


def is_null(b, p):
    return b.icmp_unsigned("==", b.ptrtoint(p, I64), i64(0))


def keep_null(b, p, idx, ety=F32):
    """``p + idx``, but NULL stays NULL (NULL + offset is not NULL: README pitfall 7)."""
    isnull = is_null(b, p)
    return b.select(isnull, p, fptr(b, p, idx, ety))


def align_up(b, p, align: int = 64):
    """``p`` rounded up to a multiple of ``align`` bytes (the start of a scratch area)."""
    return b.inttoptr(b.and_(b.add(b.ptrtoint(p, I64), i64(align - 1)), i64(-align)), PTR)


def split_rows_or_columns(b, by_rows, rows, cols, tid, nthreads, row_align: int = 1, col_align: int = 1):
    """Part ``tid`` of ``nthreads`` of a rows x cols iteration space, cut along the rows when the
    i1 ``by_rows`` holds, else along the columns (ranges aligned as given; ``threads.split_range``).
    Returns (r0, r1, c0, c1)."""
    r0, r1 = threads.split_range(b, rows, tid, nthreads, row_align)
    c0, c1 = threads.split_range(b, cols, tid, nthreads, col_align)
    zero = i64(0)
    return (b.select(by_rows, r0, zero), b.select(by_rows, r1, rows),
            b.select(by_rows, zero, c0), b.select(by_rows, cols, c1))


# ----------------------------------------------------------------------------- functions and loops
def function(mod: ir.Module, name: str, args: list, internal: bool = True, noinline: bool = False):
    """A new ``void name(args)`` in ``mod`` (nounwind; internal unless told) and a builder at its entry."""
    fn = ir.Function(mod, ir.FunctionType(VOID, args), name)
    if internal:
        fn.linkage = "internal"
    fn.attributes.add("nounwind")
    if noinline:
        fn.attributes.add("noinline")
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


def _loop_open(b: ir.IRBuilder, start, stop, name: str, init=()):
    """Head (an i64 phi from ``start``, one phi per ``init`` value) and body of a counted loop;
    leaves the builder in the body. Returns (iv, phis, head, exit)."""
    start, stop = _as_i64(start), _as_i64(stop)
    fn = b.function
    pre = b.block
    head = fn.append_basic_block(name + ".head")
    body = fn.append_basic_block(name + ".body")
    exit_ = fn.append_basic_block(name + ".exit")
    b.branch(head)
    b.position_at_end(head)
    iv = b.phi(I64, name)
    iv.add_incoming(start, pre)
    phis = []
    for v in init:
        p = b.phi(v.type)
        p.add_incoming(v, pre)
        phis.append(p)
    b.cbranch(b.icmp_signed("<", iv, stop), body, exit_)
    b.position_at_end(body)
    return iv, phis, head, exit_


def _loop_close(b: ir.IRBuilder, iv, step, head, exit_, phis=(), values=(), next_name: str = ""):
    iv.add_incoming(b.add(iv, _as_i64(step), name=next_name), b.block)
    for p, v in zip(phis, values):
        p.add_incoming(v, b.block)
    b.branch(head)
    b.position_at_end(exit_)


@contextmanager
def for_range(b: ir.IRBuilder, start, stop, step=1, name="i"):
    """``for (i = start; i < stop; i += step)``; yields ``i``. Header with a phi: canonical for LLVM."""
    iv, _, head, exit_ = _loop_open(b, start, stop, name)
    yield iv
    _loop_close(b, iv, step, head, exit_, next_name=name + ".next")


def carried_loop(b: ir.IRBuilder, start, stop, step, init: list, body, name="k") -> list:
    """A counted loop whose values ``init`` are carried as phis; ``body(i, vals) -> vals``."""
    iv, phis, head, exit_ = _loop_open(b, start, stop, name, init)
    out = body(iv, phis)
    _loop_close(b, iv, step, head, exit_, phis, out)
    return phis


@contextmanager
def if_then(b: ir.IRBuilder, cond, name="if"):
    then = b.function.append_basic_block(name + ".then")
    done = b.function.append_basic_block(name + ".end")
    b.cbranch(cond, then, done)
    b.position_at_end(then)
    yield
    b.branch(done)
    b.position_at_end(done)


# ----------------------------------------------------------------------------- vectors
class VecOps:
    """<L x float> building blocks over one IRBuilder: splats, lane masks, masked memory, math."""

    def __init__(self, b: ir.IRBuilder, lanes: int):
        self.b, self.L = b, lanes
        self.vf = ir.VectorType(F32, lanes)
        self.vi = ir.VectorType(I32, lanes)
        self.vm = ir.VectorType(I1, lanes)
        self.iota = ir.Constant(self.vi, list(range(lanes)))
        self.none = ir.Constant(self.vm, [0] * lanes)
        self.zero = ir.Constant(self.vf, None)
        # llvmlite wraps every lane of a list constant anew (~60 us for 16 lanes): a splat's
        # operands are made once per VecOps (constants print the same wherever they are used)
        self._lane0 = ir.Constant(self.vi, [0] * lanes)
        self._undef: dict = {}

    def _intr(self, name, ret, args):
        return threads.declare(self.b.module, name, ret, args)

    def const(self, x: float):
        return ir.Constant(self.vf, [float(x)] * self.L)

    def splat(self, x):
        return self.splat_as(x, self.vf)

    def splat_as(self, x, vt: ir.VectorType):
        """The scalar ``x`` in every lane of a vector of type ``vt`` (L lanes)."""
        b = self.b
        undef = self._undef.get(str(vt))
        if undef is None:
            undef = self._undef[str(vt)] = ir.Constant(vt, ir.Undefined)
        v = b.insert_element(undef, x, ir.Constant(I32, 0))
        return b.shuffle_vector(v, undef, self._lane0)

    def splat_i32(self, x):
        """An integer (an i64 is truncated) in every lane of <L x i32>."""
        if x.type != I32:
            x = self.b.trunc(x, I32)
        return self.splat_as(x, self.vi)

    def mask(self, count):
        """Lanes ``< count`` set (count an i64, clamped to [0, L])."""
        b = self.b
        c = imax(b, imin(b, count, i64(self.L)), i64(0))
        return b.icmp_signed("<", self.iota, self.splat_i32(c))

    def load(self, p):
        return self.b.load(p, typ=self.vf, align=4)

    def store(self, v, p):
        self.b.store(v, p, align=4)

    def mload(self, p, mask, passthru=None):
        return self.masked_load(p, mask, self.vf, passthru)

    def mstore(self, v, p, mask):
        self.masked_store(v, p, mask)

    @staticmethod
    def _suffix(vt: ir.VectorType) -> str:
        e = vt.element
        return f"v{vt.count}{'f32' if e == F32 else 'i' + str(e.width)}"

    def masked_load(self, p, mask, vt: ir.VectorType, passthru=None, align: int = 4):
        """``llvm.masked.load`` of a vector of type ``vt``; off lanes get ``passthru`` (zeros)."""
        f = self._intr(f"llvm.masked.load.{self._suffix(vt)}.p0", vt, [PTR, I32, self.vm, vt])
        return self.b.call(f, [p, ir.Constant(I32, align), mask, passthru or ir.Constant(vt, None)])

    def masked_store(self, v, p, mask, align: int = 4):
        """``llvm.masked.store`` of the vector ``v`` (any element type)."""
        f = self._intr(f"llvm.masked.store.{self._suffix(v.type)}.p0", VOID, [v.type, PTR, I32, self.vm])
        self.b.call(f, [v, p, ir.Constant(I32, align), mask])

    def to_8bit(self, v, signed: bool):
        """Float lanes (already rounded) saturated to the int8 or uint8 range, as <L x i8>."""
        lo, hi = (-128.0, 127.0) if signed else (0.0, 255.0)
        v = self.clamp_hi(self.clamp_lo(v, self.const(lo)), self.const(hi))
        return self.b.trunc(self.b.fptosi(v, self.vi), ir.VectorType(I8, self.L))

    def transpose(self, rows: list) -> list:
        """Transpose L vectors of L lanes (any element type): log2(L) rounds of zipping row i with
        row i + L/2."""
        b, L = self.b, self.L
        lo = ir.Constant(self.vi, [j for t in range(L // 2) for j in (t, L + t)])
        hi = ir.Constant(self.vi, [j for t in range(L // 2, L) for j in (t, L + t)])
        for _ in range(L.bit_length() - 1):
            nxt = []
            for i in range(L // 2):
                nxt += [b.shuffle_vector(rows[i], rows[i + L // 2], lo),
                        b.shuffle_vector(rows[i], rows[i + L // 2], hi)]
            rows = nxt
        return rows

    def fma(self, a, x, c):
        """a*x + c; fused where the target has FMA (llvm.fmuladd), never a libm call."""
        f = self._intr(f"llvm.fmuladd.v{self.L}f32", self.vf, [self.vf] * 3)
        return self.b.call(f, [a, x, c])

    def _unary(self, name, x):
        f = self._intr(f"llvm.{name}.v{self.L}f32", self.vf, [self.vf])
        return self.b.call(f, [x])

    def fabs(self, x):
        return self._unary("fabs", x)

    def copysign(self, mag, sign):
        f = self._intr(f"llvm.copysign.v{self.L}f32", self.vf, [self.vf, self.vf])
        return self.b.call(f, [mag, sign])

    def lt(self, x, y):
        return self.b.fcmp_ordered("<", x, y)

    def clamp_lo(self, x, lo):     # NaN passes through, as np.maximum propagates it
        return self.b.select(self.lt(x, lo), lo, x)

    def clamp_hi(self, x, hi):
        return self.b.select(self.lt(hi, x), hi, x)

    def horner(self, coeffs, t):
        acc = self.const(coeffs[-1])
        for c in coeffs[-2::-1]:
            acc = self.fma(acc, t, self.const(c))
        return acc

    # ---- transcendental functions, vectorized, no libm calls
    def exp(self, x):
        """e^x as e^r * 2^n, n = rint(x/ln2), |r| <= ln2/2; ~1 ulp. Results below the smallest
        normal float are 0, above the largest +inf; NaN stays NaN."""
        b = self.b
        xin = x
        x = self.clamp_hi(self.clamp_lo(x, self.const(-87.3)), self.const(88.0))
        magic = 12582912.0    # 1.5 * 2^23: adding it rounds to an integer kept in the low mantissa
        t = self.fma(x, self.const(1.4426950408889634), self.const(magic))
        n = b.fsub(t, self.const(magic))
        r = self.fma(n, self.const(-0.693359375), x)            # Cody-Waite: ln2 = hi + lo
        r = self.fma(n, self.const(2.12194440e-4), r)
        p = self.horner(_EXP_P, r)
        ni = b.sub(b.bitcast(t, self.vi), ir.Constant(self.vi, [0x4B400000] * self.L))
        scale = b.bitcast(b.shl(b.add(ni, ir.Constant(self.vi, [127] * self.L)),
                                ir.Constant(self.vi, [23] * self.L)), self.vf)
        r = b.fmul(p, scale)
        r = b.select(self.lt(self.const(88.72284), xin), self.const(math.inf), r)
        return b.select(self.lt(xin, self.const(-87.33654)), self.zero, r)

    def sigmoid(self, x):
        b = self.b
        return b.fdiv(self.const(1.0), b.fadd(self.const(1.0), self.exp(b.fsub(self.zero, x))))

    def tanh(self, x):
        """x*P(x^2) below 0.625 (no cancellation), 1 - 2/(e^2|x| + 1) above; sign restored."""
        b = self.b
        a = self.fabs(x)
        small = self.lt(a, self.const(0.625))
        p = b.fmul(a, self.horner(_TANH_P, b.fmul(a, a)))
        e = self.exp(b.fmul(self.const(2.0), self.clamp_hi(a, self.const(9.0))))
        big = b.fsub(self.const(1.0), b.fdiv(self.const(2.0), b.fadd(e, self.const(1.0))))
        return self.copysign(b.select(small, p, big), x)

    def erfc_nonneg(self, u, u2=None):
        """erfc(u) for u >= 0, with relative accuracy: 1 - u*P(u^2) below 1, else
        e^(-u^2) * G(1/u) / u. ``u2`` = (hi, lo) with hi + lo = u^2 to more than float precision
        (an error d in u^2 scales e^(-u^2) by 1 - d, and u^2 reaches 100)."""
        b = self.b
        one = self.const(1.0)
        small = self.lt(u, one)
        e_small = b.fsub(one, b.fmul(u, self.horner(_ERF_P, b.fmul(u, u))))
        ul = self.clamp_lo(u, one)
        w = b.fdiv(one, ul)
        if u2 is None:
            hi = b.fmul(ul, ul)
            lo = self.fma(ul, ul, b.fsub(self.zero, hi))   # exact with FMA hardware, 0 without
        else:
            hi, lo = u2
        ex = b.fmul(self.exp(b.fsub(self.zero, hi)), b.fsub(one, lo))
        e_big = b.fmul(b.fmul(ex, self.horner(_ERFC_P, w)), w)
        e_big = b.select(self.lt(ul, self.const(10.0)), e_big, self.zero)
        return b.select(small, e_small, e_big)

    def gelu(self, x):
        """0.5*x*(1 + erf(x/sqrt2)) = 0.5*x*(2 - erfc(u)) for x >= 0, 0.5*x*erfc(|u|) below.
        u^2 = x^2/2 is formed from x (hi + lo by FMA) rather than from the rounded u."""
        b = self.b
        u = self.fabs(b.fmul(x, self.const(0.7071067811865476)))
        xx = b.fmul(x, x)
        xx_lo = self.fma(x, x, b.fsub(self.zero, xx))
        half = self.const(0.5)
        e = self.erfc_nonneg(u, (b.fmul(half, xx), b.fmul(half, xx_lo)))
        f = b.select(self.lt(x, self.zero), e, b.fsub(self.const(2.0), e))
        return b.fmul(b.fmul(half, x), f)

    def gelu_tanh(self, x):
        """0.5*x*(1 + tanh(z)) = x*sigmoid(2z), z = sqrt(2/pi)*(x + 0.044715*x^3): no cancellation."""
        b = self.b
        x3 = b.fmul(b.fmul(x, x), x)
        z2 = b.fmul(self.const(2 * 0.7978845608028654), self.fma(self.const(0.044715), x3, x))
        return b.fmul(x, self.sigmoid(z2))

    def activation(self, ep, v):
        """The activation of an ``Epilogue`` (gemm.py) on ``v``, its parameters fixed at generation."""
        return self.apply_activation(ep.activation, v, ep.alpha, ep.beta)

    def apply_activation(self, name: str, v, alpha=0.0, beta=0.0):
        """Activation ``name`` (one of ACTIVATIONS) on ``v``. ``alpha``/``beta`` (clip's lo/hi,
        leaky_relu's slope) are floats fixed at generation or float scalars read at run time;
        a float clip bound at infinity is left out."""
        b = self.b
        if name == "none":
            return v
        if name == "relu":
            return b.select(self.lt(v, self.zero), self.zero, v)
        if name == "clip":
            if isinstance(alpha, ir.Value) or alpha != -math.inf:
                v = self.clamp_lo(v, self._broadcast(alpha))
            if isinstance(beta, ir.Value) or beta != math.inf:
                v = self.clamp_hi(v, self._broadcast(beta))
            return v
        if name == "leaky_relu":
            return b.select(self.lt(v, self.zero), b.fmul(v, self._broadcast(alpha)), v)
        if name == "sigmoid":
            return self.sigmoid(v)
        if name == "tanh":
            return self.tanh(v)
        if name == "gelu":
            return self.gelu(v)
        if name == "gelu_tanh":
            return self.gelu_tanh(v)
        if name == "silu":
            return b.fmul(v, self.sigmoid(v))
        raise CompileError(f"unknown GEMM epilogue activation {name!r}")

    def _broadcast(self, x):
        """A vector of the float ``x`` (a constant) or of the float scalar value ``x`` (a splat)."""
        return self.splat(x) if isinstance(x, ir.Value) else self.const(x)
