"""The scalar-builder interface (``irgraph.ops.scalar``) over llvmlite IR values.

Values are ``V(value, dtype)``: the LLVM value and the element type it holds, since LLVM's
integer types do not say signed or unsigned. In registers bool is ``i1``, float16 is ``half``
and bfloat16 is a ``float`` holding an exactly representable bfloat16 value (every bfloat16 op
rounds its float32 result back, as ml_dtypes does); in memory bool is ``i8`` and bfloat16 ``i16``.

exp/log/tanh/erf in float32 are branch-free polynomials (so loops that use them vectorize),
accurate to a few ulp; float64 versions and the rarer functions (sin, atan, pow …) call libm,
which numpy uses too. Integer semantics follow numpy/ONNX: division truncates toward zero,
``mod`` takes the divisor's sign, division by zero gives 0.
"""
from __future__ import annotations

import math

from llvmlite import ir

from irgraph import dtype as dt
from irgraph.dtype import DType
from irgraph.ops.scalar import ScalarBuilder

from ..kernel_ir import LoweringError

I1, I8, I16, I32, I64 = (ir.IntType(n) for n in (1, 8, 16, 32, 64))
F16, F32, F64 = ir.HalfType(), ir.FloatType(), ir.DoubleType()
PTR = ir.PointerType()
_HALF = (dt.float16, dt.bfloat16)


# Narrow types (ml_dtypes stores each in one byte): integers are held sign- or zero-extended in
# an i8 register; float8/float4 values in a float32 register holding an exactly representable
# value (decoded by table on load, rounded and encoded on store and after each op).
SMALL_INTS = (dt.int4, dt.uint4, dt.int2, dt.uint2)
# format: (mantissa bits, bias, min exponent, max exponent field, max mantissa at it,
#          overflow: "nan"|"inf"|"sat", nan code, inf code or None, -0 exists, sign bit)
SMALL_FLOATS = {
    dt.float8e4m3fn: (3, 7, -6, 15, 6, "nan", 0x7F, None, True, 7),
    dt.float8e4m3fnuz: (3, 8, -7, 15, 7, "nan", 0x80, None, False, 7),
    dt.float8e5m2: (2, 15, -14, 30, 3, "inf", 0x7E, 0x7C, True, 7),
    dt.float8e5m2fnuz: (2, 16, -15, 31, 3, "nan", 0x80, None, False, 7),
    dt.float4e2m1: (1, 1, 0, 3, 1, "sat", None, None, True, 3),
    # scale-only: no sign, no mantissa, no zero; 2**-127 .. 2**127, NaN 0xFF (own encoder)
    dt.float8e8m0: (0, 127, -127, 254, 0, "nan", 0xFF, None, False, None),
}


def is_narrow(d: DType) -> bool:
    return d in SMALL_INTS or d in SMALL_FLOATS


def reg_type(d: DType) -> ir.Type:
    if d.is_bool:
        return I1
    if d in SMALL_INTS:
        return I8
    if d in SMALL_FLOATS:
        return F32
    if d.is_int:
        return ir.IntType(d.bits)
    if d is dt.float16:
        return F16
    if d is dt.bfloat16 or d is dt.float32:
        return F32
    if d is dt.float64:
        return F64
    raise LoweringError(f"the CPU backend has no register type for {d.name}")


def mem_type(d: DType) -> ir.Type:
    if d.is_bool or is_narrow(d):
        return I8
    if d is dt.bfloat16:
        return I16
    return reg_type(d)


class V:
    __slots__ = ("value", "dtype")

    def __init__(self, value, dtype: DType):
        self.value = value
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"V({self.value}, {self.dtype.name})"


# Cephes single-precision coefficients (S. Moshier), re-derived ranges noted where used.
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
          1.6666665459e-1, 5.0000001201e-1)
_LOG_P = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
          1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
          3.3333331174e-1)
_TANH_P = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
           -3.33332819422e-1)
# erf as irgraph.ops.elementwise.erf_np: series below 0.5, erfc fit (Numerical Recipes) above
_ERFC_P = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
           -1.13520398, 1.48851587, -0.82215223, 0.17087277)
_ERF_TAYLOR = tuple((-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(7))

_LIBM = {"exp", "log", "tanh", "erf", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh",
         "asinh", "acosh", "atanh", "pow", "fmod"}


class LLVMScalar(ScalarBuilder):
    """Builds scalar LLVM IR at ``self.b``'s insertion point. ``fast`` (set by the caller around
    one op) adds the reassoc/nsz flags allowed on a reduction's combine step."""

    def __init__(self, builder: ir.IRBuilder, module: ir.Module):
        self.b = builder
        self.module = module
        self.fast = False

    # ---- plumbing ---------------------------------------------------------------------------
    def _fn(self, name: str, ret: ir.Type, args) -> ir.Function:
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ret, list(args)), name=name)
        return fn

    def _intrin(self, name: str, x_type: ir.Type, nargs: int = 1, ret: ir.Type | None = None):
        suffix = {F16: "f16", F32: "f32", F64: "f64"}.get(x_type) or f"i{x_type.width}"
        return self._fn(f"llvm.{name}.{suffix}", ret or x_type, [x_type] * nargs)

    def _call(self, fn, args):
        return self.b.call(fn, args)

    @property
    def _flags(self):
        return ("reassoc", "nsz") if self.fast else ()

    def _ret(self, value, d: DType) -> V:
        """Wrap a result; bfloat16 results are rounded to bfloat16 (held in a float)."""
        if d is dt.bfloat16:
            value = self._round_bf16(value)
        elif d in SMALL_FLOATS:
            value = self._decode(self._encode(value, d), d)
        elif d in SMALL_INTS:
            value = self._wrap(value, d)
        return V(value, d)

    def _const_ir(self, value, d: DType):
        from ..kernel_ir import Const
        v = Const(value, d).value
        if d is dt.bool_:
            return ir.Constant(I1, int(bool(v)))
        return ir.Constant(reg_type(d), v)

    def _f(self, value: float, like: V) -> V:
        return V(self._const_ir(value, like.dtype), like.dtype)

    def _to_f32(self, x: V) -> V:
        return self.cast(x, dt.float32) if x.dtype in _HALF else x

    def _via_f32(self, x: V, fn) -> V:
        """Half-precision transcendental functions run in float32 and round once."""
        if x.dtype in _HALF:
            return self.cast(fn(self.cast(x, dt.float32)), x.dtype)
        return fn(x)

    # ---- memory -----------------------------------------------------------------------------
    def load(self, ptr, d: DType) -> V:
        raw = self.b.load(ptr, typ=mem_type(d))
        if d in SMALL_INTS:
            return V(self._wrap(raw, d), d)
        if d in SMALL_FLOATS:
            return V(self._decode(raw, d), d)
        if d.is_bool:
            return V(self.b.icmp_unsigned("!=", raw, ir.Constant(I8, 0)), d)
        if d is dt.bfloat16:
            w = self.b.shl(self.b.zext(raw, I32), ir.Constant(I32, 16))
            return V(self.b.bitcast(w, F32), d)
        return V(raw, d)

    def store(self, ptr, x: V) -> None:
        d = x.dtype
        v = x.value
        if d.is_bool:
            v = self.b.zext(v, I8)
        elif d in SMALL_INTS:
            v = self.b.and_(v, ir.Constant(I8, (1 << d.bits) - 1))
        elif d in SMALL_FLOATS:
            v = self._encode(v, d)
        elif d is dt.bfloat16:
            v = self.b.trunc(self.b.lshr(self.b.bitcast(v, I32), ir.Constant(I32, 16)), I16)
        self.b.store(v, ptr)

    # ---- narrow types ------------------------------------------------------------------------------
    def _wrap(self, v, d: DType):
        """An i8 holding the low ``d.bits`` bits, sign- or zero-extended (ml_dtypes' int4 …)."""
        sh = ir.Constant(I8, 8 - d.bits)
        if d.kind == "i":
            return self.b.ashr(self.b.shl(v, sh), sh)
        return self.b.and_(v, ir.Constant(I8, (1 << d.bits) - 1))

    def _decode(self, code, d: DType):
        """float8/float4 code (i8) -> float32, by a table built from ml_dtypes."""
        import numpy as np
        n = 16 if d is dt.float4e2m1 else 256
        name = f"irg.decode.{d.name}"
        g = self.module.globals.get(name)
        if g is None:
            vals = np.arange(n, dtype=np.uint8).view(d.np).astype(np.float32)
            aty = ir.ArrayType(F32, n)
            g = ir.GlobalVariable(self.module, aty, name=name)
            g.initializer = ir.Constant(aty, [float(v) for v in vals])
            g.global_constant = True
            g.linkage = "internal"
        idx = self.b.zext(code, I64)
        if n == 16:
            idx = self.b.and_(idx, ir.Constant(I64, 15))
        p = self.b.gep(g, [ir.Constant(I64, 0), idx], inbounds=True, source_etype=g.value_type)
        return self.b.load(p, typ=F32)

    def _encode(self, x, d: DType):
        """float32 -> float8/float4 code, rounding to nearest even, overflow and NaN as ml_dtypes."""
        if d is dt.float8e8m0:
            return self._encode_e8m0(x)
        M, bias, emin, maxe, maxm, over, nan_code, inf_code, negzero, sbit = SMALL_FLOATS[d]
        b = self.b
        c32 = lambda v: ir.Constant(I32, v)  # noqa: E731
        bits = b.bitcast(x, I32)
        sign = b.lshr(bits, c32(31))
        a = self._call(self._intrin("fabs", F32), [x])
        eu = b.sub(b.and_(b.lshr(b.bitcast(a, I32), c32(23)), c32(0xFF)), c32(127))
        e = b.select(b.icmp_signed("<", eu, c32(emin)), c32(emin), eu)
        e = b.select(b.icmp_signed(">", e, c32(126)), c32(126), e)
        scale = b.bitcast(b.shl(b.add(b.sub(c32(M), e), c32(127)), c32(23)), F32)
        m = self._call(self._intrin("roundeven", F32), [b.fmul(a, scale)])
        big = b.fcmp_ordered(">=", m, self._fc(float(1 << (M + 2))))
        mi = b.fptoui(b.select(big, self._fc(float(1 << (M + 2))), m), I32)
        carry = b.icmp_unsigned(">=", mi, c32(1 << (M + 1)))
        e = b.select(carry, b.add(e, c32(1)), e)
        mi = b.select(carry, b.lshr(mi, c32(1)), mi)
        normal = b.icmp_unsigned(">=", mi, c32(1 << M))
        ef = b.select(normal, b.add(e, c32(bias)), c32(0))
        mant = b.select(normal, b.sub(mi, c32(1 << M)), mi)
        overflow = b.or_(b.or_(big, b.icmp_signed(">", ef, c32(maxe))),
                         b.and_(b.icmp_signed("==", ef, c32(maxe)), b.icmp_unsigned(">", mant, c32(maxm))))
        mag = b.or_(b.shl(ef, c32(M)), mant)
        sgn = b.shl(sign, c32(sbit))
        if over == "sat":
            ovc = b.or_(c32((maxe << M) | maxm), sgn)
        elif over == "inf":
            ovc = b.or_(c32(inf_code), sgn)
        else:
            ovc = c32(nan_code) if not negzero else b.or_(c32(nan_code), sgn)
        code = b.select(overflow, ovc, b.or_(mag, sgn) if negzero else
                        b.select(b.icmp_unsigned("==", mag, c32(0)), c32(0), b.or_(mag, sgn)))
        isinf = b.fcmp_ordered("==", a, self._fc(float("inf")))
        code = b.select(isinf, ovc, code)
        if nan_code is None:  # float4: NaN comes out as a zero of the opposite sign (ml_dtypes)
            nanc = b.shl(b.xor(sign, c32(1)), c32(sbit))
        else:
            nanc = c32(nan_code) if not negzero else b.or_(c32(nan_code), sgn)
        code = b.select(b.fcmp_unordered("uno", x, x), nanc, code)
        return b.trunc(code, I8)

    def _encode_e8m0(self, x):
        """float32 -> float8e8m0 code as ml_dtypes converts: a normal value keeps its exponent
        field, plus one when the top mantissa bit is set (ties away, overflow to NaN 0xFF); a
        subnormal becomes 2**-126 above 2**-127, else 2**-127; zero, negatives, inf, NaN: NaN."""
        b = self.b
        c32 = lambda v: ir.Constant(I32, v)  # noqa: E731
        bits = b.bitcast(x, I32)
        ef = b.and_(b.lshr(bits, c32(23)), c32(0xFF))
        normal = b.add(ef, b.and_(b.lshr(bits, c32(22)), c32(1)))
        normal = b.select(b.icmp_unsigned(">", normal, c32(0xFF)), c32(0xFF), normal)
        sub = b.select(b.fcmp_ordered(">", x, self._fc(2.0 ** -127)), c32(1), c32(0))
        code = b.select(b.icmp_unsigned("==", ef, c32(0)), sub, normal)
        bad = b.or_(b.fcmp_unordered("<=", x, self._fc(0.0)), b.icmp_unsigned("==", ef, c32(0xFF)))
        return b.trunc(b.select(bad, c32(0xFF), code), I8)

    # ---- bfloat16 / float16 rounding ------------------------------------------------------------
    def _round_bf16(self, f):
        """float32 -> nearest bfloat16 (ties to even), returned as a float32 value; NaN stays NaN."""
        b = self.b
        bits = b.bitcast(f, I32)
        lsb = b.and_(b.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 1))
        r = b.add(b.add(bits, ir.Constant(I32, 0x7FFF)), lsb)
        r = b.and_(r, ir.Constant(I32, 0xFFFF0000 - (1 << 32)))
        nan = b.or_(b.and_(bits, ir.Constant(I32, 0xFFFF0000 - (1 << 32))), ir.Constant(I32, 0x00400000))
        isnan = b.fcmp_unordered("uno", f, f)
        return b.bitcast(b.select(isnan, nan, r), F32)

    def _f64_to_f32_odd(self, d):
        """float64 -> float32 rounded to odd, so a second rounding to a narrower float is exact."""
        b = self.b
        f = b.fptrunc(d, F32)
        back = b.fpext(f, F64)
        inexact = b.fcmp_ordered("!=", back, d)
        # round-to-nearest may have gone away from zero: step one ulp toward zero first
        away = b.fcmp_ordered(">", self._call(self._intrin("fabs", F64), [back]),
                              self._call(self._intrin("fabs", F64), [d]))
        bits = b.bitcast(f, I32)
        bits = b.select(b.and_(inexact, away), b.sub(bits, ir.Constant(I32, 1)), bits)
        bits = b.select(inexact, b.or_(bits, ir.Constant(I32, 1)), bits)
        return b.bitcast(bits, F32)

    # ---- the interface ----------------------------------------------------------------------------
    def const(self, value, like) -> V:
        d = like.dtype if isinstance(like, V) else like
        return V(self._const_ir(value, d), d)

    def dtype_of(self, x: V) -> DType:
        return x.dtype

    def cast(self, x: V, to: DType) -> V:
        src = x.dtype
        if src is to:
            return x
        b, v = self.b, x.value
        if src in SMALL_INTS:    # held as an extended i8: an int8/uint8 value
            return self.cast(V(v, dt.int8 if src.kind == "i" else dt.uint8), to)
        if src in SMALL_FLOATS:  # held as an exact float32
            return self.cast(V(v, dt.float32), to)
        if to in SMALL_INTS:     # wrap to the low bits, as ml_dtypes converts (through int64)
            w = self.cast(x, dt.int64) if not src.is_bool else self.cast(x, dt.int8)
            return V(self._wrap(b.trunc(w.value, I8) if w.value.type != I8 else w.value, to), to)
        if to in SMALL_FLOATS:   # through float32, as ml_dtypes converts
            f = self.cast(x, dt.float32).value
            return V(self._decode(self._encode(f, to), to), to)
        rt = reg_type(to)
        if to.is_bool:
            if src.is_float:
                return V(b.fcmp_unordered("!=", v, ir.Constant(v.type, 0.0)), to)
            return V(b.icmp_unsigned("!=", v, ir.Constant(v.type, 0)), to)
        if src.is_bool:
            if to.is_int:
                return V(b.zext(v, rt), to)
            return self._ret(b.uitofp(v, rt), to)
        if src.is_int and to.is_int:
            if to.bits < src.bits:
                return V(b.trunc(v, rt), to)
            if to.bits > src.bits:
                return V(b.sext(v, rt) if src.kind == "i" else b.zext(v, rt), to)
            return V(v, to)
        if src.is_int:  # -> float
            conv = b.sitofp if src.kind == "i" else b.uitofp
            if to is dt.bfloat16:
                return self._ret(conv(v, F32), to)
            return V(conv(v, rt), to)
        if to.is_int:  # float -> int as numpy on x86: int32 directly, others through int64
            f = v if src is not dt.float16 else b.fpext(v, F32)
            ft = f.type
            if to is dt.uint64:
                s = self._fptoi(f, I64)
                u = self._call(self._sat("fptoui", ft, I64), [f])
                neg = b.fcmp_ordered("<", f, ir.Constant(ft, 0.0))
                return V(b.select(neg, s, u), to)
            if to is dt.int32:
                return V(self._fptoi(f, I32), to)
            s = self._fptoi(f, I64)
            return V(s if to.bits == 64 else b.trunc(s, rt), to)
        # float -> float
        if to is dt.bfloat16:
            f = v
            if src is dt.float64:  # through float32, as ml_dtypes converts (rounding twice)
                f = b.fptrunc(v, F32)
            elif src is dt.float16:
                f = b.fpext(v, F32)
            return V(self._round_bf16(f), to)
        if src is dt.bfloat16:
            return V(v if to is dt.float32 else (b.fpext(v, rt) if to is dt.float64 else b.fptrunc(v, rt)), to)
        if to is dt.float16 and src is dt.float64:
            return V(b.fptrunc(self._f64_to_f32_odd(v), F16), to)
        order = {dt.float16: 0, dt.float32: 1, dt.float64: 2}
        return V(b.fpext(v, rt) if order[to] > order[src] else b.fptrunc(v, rt), to)

    def _fptoi(self, f, it):
        """Truncating float -> signed int; out of range and NaN give INT_MIN (x86's cvttss2si,
        which is what numpy returns), never poison."""
        b = self.b
        s = self._call(self._sat("fptosi", f.type, it), [f])
        lim = ir.Constant(f.type, float(2 ** (it.width - 1)))
        ok = b.fcmp_ordered("<", self._call(self._intrin("fabs", f.type), [f]), lim)
        return b.select(ok, s, ir.Constant(it, -(1 << (it.width - 1))))

    def _sat(self, kind: str, ft, it):
        return self._fn(f"llvm.{kind}.sat.i{it.width}.{'f32' if ft == F32 else 'f64'}", it, [ft])

    # -- arithmetic --
    def add(self, a: V, c: V) -> V:
        if a.dtype.is_float:
            return self._ret(self.b.fadd(a.value, c.value, flags=self._flags), a.dtype)
        if a.dtype.is_bool:
            return V(self.b.or_(a.value, c.value), a.dtype)
        return V(self.b.add(a.value, c.value), a.dtype)

    def sub(self, a: V, c: V) -> V:
        if a.dtype.is_float:
            return self._ret(self.b.fsub(a.value, c.value, flags=self._flags), a.dtype)
        return V(self.b.sub(a.value, c.value), a.dtype)

    def mul(self, a: V, c: V) -> V:
        if a.dtype.is_float:
            return self._ret(self.b.fmul(a.value, c.value, flags=self._flags), a.dtype)
        if a.dtype.is_bool:
            return V(self.b.and_(a.value, c.value), a.dtype)
        return V(self.b.mul(a.value, c.value), a.dtype)

    def _int_guard(self, a: V, c: V):
        """(safe divisor, is-zero) for integer division: x / 0 is 0 as in numpy, never a trap."""
        zero = ir.Constant(c.value.type, 0)
        isz = self.b.icmp_unsigned("==", c.value, zero)
        safe = self.b.select(isz, ir.Constant(c.value.type, 1), c.value)
        if a.dtype.kind == "i":  # INT_MIN / -1 overflows: divide by 1 and negate instead
            m1 = self.b.icmp_signed("==", safe, ir.Constant(c.value.type, -1))
            safe = self.b.select(m1, ir.Constant(c.value.type, 1), safe)
            return safe, isz, m1
        return safe, isz, None

    def div(self, a: V, c: V) -> V:
        d = a.dtype
        if d.is_float:
            return self._ret(self.b.fdiv(a.value, c.value), d)
        safe, isz, m1 = self._int_guard(a, c)
        zero = ir.Constant(a.value.type, 0)
        if d.kind == "i":
            q = self.b.sdiv(a.value, safe)
            q = self.b.select(m1, self.b.sub(zero, a.value), q)
        else:
            q = self.b.udiv(a.value, safe)
        return V(self.b.select(isz, zero, q), d)

    def neg(self, a: V) -> V:
        if a.dtype.is_float:
            return self._ret(self.b.fneg(a.value), a.dtype)
        return V(self.b.sub(ir.Constant(a.value.type, 0), a.value), a.dtype)

    def fmod(self, a: V, c: V) -> V:
        d = a.dtype
        if d.is_float:
            x, y = self._to_f32(a), self._to_f32(c)
            r = V(self.b.frem(x.value, y.value), x.dtype)
            return self.cast(r, d) if d in _HALF else r
        safe, isz, m1 = self._int_guard(a, c)
        zero = ir.Constant(a.value.type, 0)
        r = self.b.srem(a.value, safe) if d.kind == "i" else self.b.urem(a.value, safe)
        if m1 is not None:
            r = self.b.select(m1, zero, r)
        return V(self.b.select(isz, zero, r), d)

    def mod(self, a: V, c: V) -> V:
        """Remainder with the divisor's sign (numpy/Python ``%``)."""
        d = a.dtype
        if d.kind == "u":
            return self.fmod(a, c)
        if d.is_float:
            x, y = self._to_f32(a), self._to_f32(c)
            r = self.b.frem(x.value, y.value)
            zero = ir.Constant(r.type, 0.0)
            fix = self.b.and_(self.b.fcmp_ordered("!=", r, zero),
                              self.b.xor(self.b.fcmp_ordered("<", r, zero), self.b.fcmp_ordered("<", y.value, zero)))
            r = self.b.select(fix, self.b.fadd(r, y.value), r)
            # a zero remainder takes the divisor's sign too (numpy: 4 % -2 -> -0.0)
            sgn = self._call(self._intrin("copysign", r.type, 2), [zero, y.value])
            r = self.b.select(self.b.fcmp_ordered("==", r, zero), sgn, r)
            res = V(r, x.dtype)
            return self.cast(res, d) if d in _HALF else res
        r = self.fmod(a, c).value
        zero = ir.Constant(r.type, 0)
        fix = self.b.and_(self.b.icmp_signed("!=", r, zero),
                          self.b.xor(self.b.icmp_signed("<", r, zero), self.b.icmp_signed("<", c.value, zero)))
        return V(self.b.select(fix, self.b.add(r, c.value), r), d)

    def pow(self, a: V, c: V) -> V:
        d = a.dtype
        if d.is_float:
            if c.dtype is not d:
                c = self.cast(c, d)
            if d in _HALF:
                return self.cast(self.pow(self.cast(a, dt.float32), self.cast(c, dt.float32)), d)
            return V(self._libm("pow", a.value, c.value), d)
        return V(self._call(self._ipow(a.value.type, d.kind == "i"), [a.value, self.cast(c, d).value]), d)

    def _ipow(self, t: ir.IntType, signed: bool) -> ir.Function:
        """x ** y by squaring, wrapping in x's width; y < 0 gives trunc(1 / x**|y|) as numpy."""
        name = f"irg.ipow.{'i' if signed else 'u'}{t.width}"
        fn = self.module.globals.get(name)
        if fn is not None:
            return fn
        fn = ir.Function(self.module, ir.FunctionType(t, [t, t]), name=name)
        fn.linkage = "internal"
        fn.attributes.add("alwaysinline")
        x, y = fn.args
        entry = fn.append_basic_block("entry")
        loop = fn.append_basic_block("loop")
        done = fn.append_basic_block("done")
        b = ir.IRBuilder(entry)
        one, zero = ir.Constant(t, 1), ir.Constant(t, 0)
        e0 = b.select(b.icmp_signed("<", y, zero), zero, y) if signed else y
        b.branch(loop)
        b.position_at_end(loop)
        acc = b.phi(t)
        base = b.phi(t)
        e = b.phi(t)
        acc.add_incoming(one, entry)
        base.add_incoming(x, entry)
        e.add_incoming(e0, entry)
        odd = b.trunc(e, I1)
        acc2 = b.select(odd, b.mul(acc, base), acc)
        base2 = b.mul(base, base)
        e2 = b.lshr(e, one)
        acc.add_incoming(acc2, loop)
        base.add_incoming(base2, loop)
        e.add_incoming(e2, loop)
        b.cbranch(b.icmp_unsigned("!=", e2, zero), loop, done)
        b.position_at_end(done)
        res = b.phi(t)
        res.add_incoming(acc2, loop)
        if signed:
            # negative exponents: 1 ** y = 1, (-1) ** y = +-1, anything else truncates to 0
            neg = b.icmp_signed("<", y, zero)
            odd_y = b.trunc(y, I1)
            m1 = b.select(odd_y, ir.Constant(t, -1), one)
            small = b.select(b.icmp_signed("==", x, one), one,
                             b.select(b.icmp_signed("==", x, ir.Constant(t, -1)), m1, zero))
            b.ret(b.select(neg, small, res))
        else:
            b.ret(res)
        return fn

    def min(self, a: V, c: V) -> V:
        return self._minmax(a, c, "minimum", "smin", "umin")

    def max(self, a: V, c: V) -> V:
        return self._minmax(a, c, "maximum", "smax", "umax")

    def _minmax(self, a, c, fname, sname, uname):
        d = a.dtype
        if d.is_float:
            # llvm.minimum/maximum propagate NaN as numpy's minimum/maximum do
            t = a.value.type
            r = self.b.call(self._intrin(fname, t, 2), [a.value, c.value], fastmath=self._flags)
            return V(r, d)
        if d.is_bool:
            return V((self.b.and_ if fname == "minimum" else self.b.or_)(a.value, c.value), d)
        name = sname if d.kind == "i" else uname
        return V(self._call(self._intrin(name, a.value.type, 2), [a.value, c.value]), d)

    def abs(self, a: V) -> V:
        d = a.dtype
        if d.is_float:
            return V(self._call(self._intrin("fabs", a.value.type), [a.value]), d)
        if d.kind == "u" or d.is_bool:
            return a
        fn = self._fn(f"llvm.abs.i{a.value.type.width}", a.value.type, [a.value.type, I1])
        return V(self._call(fn, [a.value, ir.Constant(I1, 0)]), d)

    def sign(self, a: V) -> V:
        d = a.dtype
        b = self.b
        if d.is_float:
            v = a.value
            z = ir.Constant(v.type, 0.0)
            r = b.select(b.fcmp_ordered(">", v, z), ir.Constant(v.type, 1.0),
                         b.select(b.fcmp_ordered("<", v, z), ir.Constant(v.type, -1.0), v))
            return V(r, d)
        t = a.value.type
        z = ir.Constant(t, 0)
        if d.kind == "u":
            return V(b.zext(b.icmp_unsigned("!=", a.value, z), t), d)
        pos = b.zext(b.icmp_signed(">", a.value, z), t)
        neg = b.zext(b.icmp_signed("<", a.value, z), t)
        return V(b.sub(pos, neg), d)

    # -- transcendental --
    def _libm(self, name: str, *args):
        t = args[0].type
        fn = self._fn(name + ("f" if t == F32 else ""), t, [t] * len(args))
        return self._call(fn, list(args))

    def _unary_libm(self, name: str, a: V) -> V:
        return self._via_f32(a, lambda x: V(self._libm(name, x.value), x.dtype))

    def exp(self, a: V) -> V:
        return self._via_f32(a, lambda x: V(self._exp32(x.value), x.dtype) if x.dtype is dt.float32
                             else V(self._libm("exp", x.value), x.dtype))

    def log(self, a: V) -> V:
        return self._via_f32(a, lambda x: V(self._log32(x.value), x.dtype) if x.dtype is dt.float32
                             else V(self._libm("log", x.value), x.dtype))

    def tanh(self, a: V) -> V:
        return self._via_f32(a, lambda x: V(self._tanh32(x.value), x.dtype) if x.dtype is dt.float32
                             else V(self._libm("tanh", x.value), x.dtype))

    def erf(self, a: V) -> V:
        return self._via_f32(a, lambda x: V(self._erf32(x.value), x.dtype) if x.dtype is dt.float32
                             else V(self._libm("erf", x.value), x.dtype))

    def sqrt(self, a: V) -> V:
        return self._ret(self._call(self._intrin("sqrt", a.value.type), [a.value]), a.dtype)

    def rsqrt(self, a: V) -> V:
        s = self._call(self._intrin("sqrt", a.value.type), [a.value])
        return self._ret(self.b.fdiv(ir.Constant(s.type, 1.0), s), a.dtype)

    def sin(self, a): return self._unary_libm("sin", a)
    def cos(self, a): return self._unary_libm("cos", a)
    def tan(self, a): return self._unary_libm("tan", a)
    def asin(self, a): return self._unary_libm("asin", a)
    def acos(self, a): return self._unary_libm("acos", a)
    def atan(self, a): return self._unary_libm("atan", a)
    def sinh(self, a): return self._unary_libm("sinh", a)
    def cosh(self, a): return self._unary_libm("cosh", a)
    def asinh(self, a): return self._unary_libm("asinh", a)
    def acosh(self, a): return self._unary_libm("acosh", a)
    def atanh(self, a): return self._unary_libm("atanh", a)

    def floor(self, a): return self._rounding("floor", a)
    def ceil(self, a): return self._rounding("ceil", a)
    def round(self, a): return self._rounding("roundeven", a)

    def _rounding(self, name, a: V) -> V:
        if not a.dtype.is_float:
            return a
        return V(self._call(self._intrin(name, a.value.type), [a.value]), a.dtype)

    # float32 polynomials -------------------------------------------------------------------------
    def _fc(self, v: float):
        return ir.Constant(F32, float(v))

    def _poly(self, x, coeffs):
        """Horner's rule with ``llvm.fmuladd`` (one FMA a step where the target has it: half the
        instructions and half the latency of mul + add; each step rounds once, not twice)."""
        fma = self._intrin("fmuladd", F32, 3)
        acc = self._fc(coeffs[0])
        for c in coeffs[1:]:
            acc = self._call(fma, [acc, x, self._fc(c)])
        return acc

    def _exp32(self, x):
        """e**x: n = round(x / ln 2), r = x - n ln 2 (two-part constant), e**r by polynomial,
        scaled by 2**n in two halves so results that are subnormal or overflow come out right."""
        b = self.b
        hi, lo = self._fc(89.0), self._fc(-104.0)
        x = b.select(b.fcmp_ordered(">", x, hi), hi, x)
        x = b.select(b.fcmp_ordered("<", x, lo), lo, x)
        n = self._call(self._intrin("roundeven", F32), [b.fmul(x, self._fc(1.44269504088896341))])
        r = b.fsub(x, b.fmul(n, self._fc(0.693359375)))
        r = b.fsub(r, b.fmul(n, self._fc(-2.12194440e-4)))
        p = self._poly(r, _EXP_P)
        p = b.fadd(b.fadd(b.fmul(p, b.fmul(r, r)), r), self._fc(1.0))
        ni = b.fptosi(n, I32)
        n1 = b.ashr(ni, ir.Constant(I32, 1))
        n2 = b.sub(ni, n1)

        def pow2(k):
            return b.bitcast(b.shl(b.add(k, ir.Constant(I32, 127)), ir.Constant(I32, 23)), F32)
        return b.fmul(b.fmul(p, pow2(n1)), pow2(n2))

    def _log32(self, x):
        b = self.b
        # subnormal inputs: scale into the normal range first
        tiny = b.fcmp_ordered("<", x, self._fc(1.17549435e-38))
        xs = b.select(tiny, b.fmul(x, self._fc(8388608.0)), x)
        eadj = b.select(tiny, self._fc(-23.0), self._fc(0.0))
        bits = b.bitcast(xs, I32)
        e = b.sub(b.and_(b.lshr(bits, ir.Constant(I32, 23)), ir.Constant(I32, 0xFF)), ir.Constant(I32, 126))
        m = b.bitcast(b.or_(b.and_(bits, ir.Constant(I32, 0x007FFFFF)), ir.Constant(I32, 0x3F000000)), F32)
        ef = b.fadd(b.sitofp(e, F32), eadj)
        small = b.fcmp_ordered("<", m, self._fc(0.707106781186547524))
        ef = b.select(small, b.fsub(ef, self._fc(1.0)), ef)
        m = b.select(small, b.fsub(b.fadd(m, m), self._fc(1.0)), b.fsub(m, self._fc(1.0)))
        z = b.fmul(m, m)
        y = b.fmul(b.fmul(self._poly(m, _LOG_P), m), z)
        y = b.fadd(y, b.fmul(ef, self._fc(-2.12194440e-4)))
        y = b.fsub(y, b.fmul(z, self._fc(0.5)))
        r = b.fadd(b.fadd(m, y), b.fmul(ef, self._fc(0.693359375)))
        # specials: log(0) = -inf, log(x<0) = nan, log(inf) = inf, nan stays nan
        r = b.select(b.fcmp_ordered("==", x, self._fc(0.0)), self._fc(float("-inf")), r)
        r = b.select(b.fcmp_ordered("<", x, self._fc(0.0)), self._fc(float("nan")), r)
        r = b.select(b.fcmp_ordered("==", x, self._fc(float("inf"))), x, r)
        return b.select(b.fcmp_unordered("uno", x, x), x, r)

    def _tanh32(self, x):
        b = self.b
        ax = self._call(self._intrin("fabs", F32), [x])
        z = b.fmul(x, x)
        small = b.fadd(b.fmul(b.fmul(self._poly(z, _TANH_P), z), x), x)
        axc = b.select(b.fcmp_ordered(">", ax, self._fc(20.0)), self._fc(20.0), ax)
        e = self._exp32(b.fmul(axc, self._fc(2.0)))
        big = b.fsub(self._fc(1.0), b.fdiv(self._fc(2.0), b.fadd(e, self._fc(1.0))))
        r = b.select(b.fcmp_ordered("<", ax, self._fc(0.625)), small, big)
        return self._call(self._intrin("copysign", F32, 2), [r, x])  # odd: tanh(-0) = -0

    def _erf32(self, x):
        b = self.b
        z = self._call(self._intrin("fabs", F32), [x])
        zc = b.select(b.fcmp_ordered(">", z, self._fc(10.0)), self._fc(10.0), z)
        t = b.fdiv(self._fc(1.0), b.fadd(self._fc(1.0), b.fmul(zc, self._fc(0.5))))
        p = self._poly(t, tuple(reversed(_ERFC_P)))
        erfc = b.fmul(t, self._exp32(b.fadd(b.fneg(b.fmul(zc, zc)), p)))
        big = self._call(self._intrin("copysign", F32, 2), [b.fsub(self._fc(1.0), erfc), x])
        x2 = b.fmul(x, x)
        s = self._poly(x2, tuple(reversed(_ERF_TAYLOR)))
        series = b.fmul(b.fmul(self._fc(2.0 / math.sqrt(math.pi)), x), s)
        return b.select(b.fcmp_ordered("<", z, self._fc(0.5)), series, big)

    # -- comparisons and logic --
    _FCMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "=="}

    def _cmp(self, op: str, a: V, c: V) -> V:
        d = a.dtype
        if d.is_float:
            if op == "ne":
                r = self.b.fcmp_unordered("!=", a.value, c.value)
            else:
                r = self.b.fcmp_ordered(self._FCMP[op], a.value, c.value)
        else:
            sym = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}[op]
            f = self.b.icmp_signed if d.kind == "i" else self.b.icmp_unsigned
            r = f(sym, a.value, c.value)
        return V(r, dt.bool_)

    def lt(self, a, c): return self._cmp("lt", a, c)
    def le(self, a, c): return self._cmp("le", a, c)
    def gt(self, a, c): return self._cmp("gt", a, c)
    def ge(self, a, c): return self._cmp("ge", a, c)
    def eq(self, a, c): return self._cmp("eq", a, c)
    def ne(self, a, c): return self._cmp("ne", a, c)

    def _bool(self, x: V):
        return x.value if x.dtype.is_bool else self.cast(x, dt.bool_).value

    def and_(self, a, c): return V(self.b.and_(self._bool(a), self._bool(c)), dt.bool_)
    def or_(self, a, c): return V(self.b.or_(self._bool(a), self._bool(c)), dt.bool_)
    def xor(self, a, c): return V(self.b.xor(self._bool(a), self._bool(c)), dt.bool_)
    def not_(self, a): return V(self.b.xor(self._bool(a), ir.Constant(I1, 1)), dt.bool_)

    def bit_and(self, a, c): return V(self.b.and_(a.value, c.value), a.dtype)
    def bit_or(self, a, c): return V(self.b.or_(a.value, c.value), a.dtype)
    def bit_xor(self, a, c): return V(self.b.xor(a.value, c.value), a.dtype)
    def bit_not(self, a): return V(self.b.xor(a.value, ir.Constant(a.value.type, -1)), a.dtype)

    def shl(self, a, c):
        return V(self.b.shl(a.value, self.cast(c, a.dtype).value), a.dtype)

    def shr(self, a, c):
        s = self.cast(c, a.dtype).value
        return V(self.b.ashr(a.value, s) if a.dtype.kind == "i" else self.b.lshr(a.value, s), a.dtype)

    def select(self, cond: V, a: V, c: V) -> V:
        return V(self.b.select(self._bool(cond), a.value, c.value), a.dtype)

    def isnan(self, a: V) -> V:
        if not a.dtype.is_float:
            return V(ir.Constant(I1, 0), dt.bool_)
        return V(self.b.fcmp_unordered("uno", a.value, a.value), dt.bool_)

    def isinf(self, a: V) -> V:
        if not a.dtype.is_float:
            return V(ir.Constant(I1, 0), dt.bool_)
        ab = self._call(self._intrin("fabs", a.value.type), [a.value])
        return V(self.b.fcmp_ordered("==", ab, ir.Constant(a.value.type, float("inf"))), dt.bool_)

    # -- index ops (non-negative int64) --
    def idx_div(self, a: V, c: V) -> V:
        return V(self.b.udiv(a.value, c.value), a.dtype)

    def idx_mod(self, a: V, c: V) -> V:
        return V(self.b.urem(a.value, c.value), a.dtype)
