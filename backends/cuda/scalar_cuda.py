"""The scalar-builder interface (``irgraph.ops.scalar``) over CUDA C expression strings.

A value is ``C(text, dtype, ix)``: C source text, the element type it holds, and whether it
is pure index arithmetic (loop variables, constants and index ops only), which is printed in
the kernel's index type ``ix`` (``int`` when every buffer and loop fits 32 bits, else
``long long``). Anything computed from data is printed in its own C type.

Registers: bool is ``bool``; float16 and bfloat16 are ``float`` holding an exactly
representable value (rounded back after every op); memory: bool is a byte, float16 and
bfloat16 are their 16 bits. The helpers called here live in ``prelude.py``.
"""
from __future__ import annotations

import math

from irgraph import dtype as dt
from irgraph.dtype import DType

from ..kernel_ir import LoweringError
from .prelude_narrow import NARROW_FLOATS, NARROW_INTS, short

_HALF = (dt.float16, dt.bfloat16)
_REG = {
    dt.bool_: "bool", dt.int8: "signed char", dt.uint8: "unsigned char", dt.int16: "short",
    dt.uint16: "unsigned short", dt.int32: "int", dt.uint32: "unsigned", dt.int64: "irg_i64",
    dt.uint64: "irg_u64", dt.float16: "float", dt.bfloat16: "float", dt.float32: "float",
    dt.float64: "double",
}
# narrow types (prelude_narrow.py): one byte in memory; a float or a (un)signed char register
_REG.update({d: ("signed char" if d.kind == "i" else "unsigned char") for d in NARROW_INTS})
_REG.update({d: "float" for d in NARROW_FLOATS})
_MEM = dict(_REG)
_MEM.update({dt.bool_: "unsigned char", dt.float16: "unsigned short", dt.bfloat16: "unsigned short"})
_MEM.update({d: "unsigned char" for d in NARROW_INTS + NARROW_FLOATS})
SUPPORTED = frozenset(_REG)
NARROW = frozenset(NARROW_INTS + NARROW_FLOATS)


def carrier(d: DType) -> DType:
    """The type a narrow type's register value is computed in (int8, uint8 or float32)."""
    if d in NARROW_FLOATS:
        return dt.float32
    if d in NARROW_INTS:
        return dt.int8 if d.kind == "i" else dt.uint8
    return d


def narrow_round(text: str, d: DType) -> str:
    """A carrier value brought back to narrow type ``d`` (rounded, or wrapped to its bits)."""
    if d in NARROW_FLOATS:
        return f"irg_r_{short(d)}({text})"
    return f"irg_wrap{'s' if d.kind == 'i' else 'u'}((int)({text}), {d.bits})"


class C:
    __slots__ = ("text", "dtype", "ix")

    def __init__(self, text: str, dtype: DType, ix: bool = False):
        self.text = text
        self.dtype = dtype
        self.ix = ix

    def __repr__(self) -> str:
        return f"C({self.text!r}, {self.dtype.name})"


def check(d: DType) -> None:
    if d not in SUPPORTED:
        raise LoweringError(f"dtype {d.name} has no CUDA kernels (the CUDA backend supports "
                            "bool, integers, float8/float4 and 4/2-bit integers, float16, "
                            "bfloat16, float32 and float64)")


def reg_type(d: DType) -> str:
    check(d)
    return _REG[d]


def mem_type(d: DType) -> str:
    check(d)
    return _MEM[d]


def _wide_unsigned(d: DType) -> str:
    return "irg_u64" if d.bits == 64 else "unsigned"


def const_text(value, d: DType, ix: bool = False) -> str:
    """A C literal of exactly ``value`` as a ``d`` register value."""
    check(d)
    if d.is_bool:
        return "true" if value else "false"
    if d.is_float:
        v = float(value)
        if math.isnan(v):
            return "irg_nan()" if d is not dt.float64 else "irg_dnan()"
        if math.isinf(v):
            s = "irg_inf()" if d is not dt.float64 else "irg_dinf()"
            return s if v > 0 else f"(-{s})"
        h = float(v).hex()
        return f"{h}" if d is dt.float64 else f"{h}f"
    v = int(value)
    if ix:
        return str(v) if v >= 0 else f"({v})"
    if d.bits == 64:
        if d.kind == "u":
            return f"{v}ull"
        if v == -(1 << 63):
            return "(-9223372036854775807LL - 1)"
        return f"{v}LL" if v >= 0 else f"({v}LL)"
    if d.kind == "u":
        return f"{v}u" if d.bits == 32 else f"(({_REG[d]}){v})"
    if d.bits == 32:
        return str(v) if v > -(1 << 31) else "(-2147483647 - 1)"
    return f"(({_REG[d]}){v})"


def load_text(ptr: str, idx: str, d: DType) -> str:
    if d in NARROW_FLOATS:
        return f"irg_dec_{short(d)}({ptr}[{idx}])"
    if d in NARROW_INTS:
        return narrow_round(f"{ptr}[{idx}]", d)
    if d is dt.float16:
        return f"irg_h2f({ptr}[{idx}])"
    if d is dt.bfloat16:
        return f"irg_bf2f({ptr}[{idx}])"
    if d.is_bool:
        return f"({ptr}[{idx}] != 0)"
    return f"{ptr}[{idx}]"


def store_value(v: C) -> str:
    d = v.dtype
    if d in NARROW_FLOATS:
        return f"(unsigned char)irg_enc_{short(d)}({v.text})"
    if d in NARROW_INTS:
        return f"(unsigned char)(({v.text}) & {(1 << d.bits) - 1})"
    if d is dt.float16:
        return f"irg_f2h({v.text})"
    if d is dt.bfloat16:
        return f"irg_f2bf({v.text})"
    if d.is_bool:
        return f"(unsigned char)({v.text})"
    return v.text


_UNARY_F = {"exp": "exp", "log": "log", "sqrt": "sqrt", "tanh": "tanh", "erf": "erf", "sin": "sin",
            "cos": "cos", "tan": "tan", "asin": "asin", "acos": "acos", "atan": "atan", "sinh": "sinh",
            "cosh": "cosh", "asinh": "asinh", "acosh": "acosh", "atanh": "atanh", "floor": "floor",
            "ceil": "ceil", "round": "rint", "abs": "fabs"}
_CMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
# index arithmetic (non-negative, no overflow): infix in the index type
_IX_INFIX = {"add": "+", "sub": "-", "mul": "*", "idx_div": "/", "idx_mod": "%"}
# ops printed by one helper each, differing only in a symbol: op -> (CudaScalar method, symbol)
_BY_SYMBOL = {
    "add": ("_arith", "+"), "sub": ("_arith", "-"), "mul": ("_arith", "*"),
    "min": ("_minmax", "min"), "max": ("_minmax", "max"),
    "and": ("_logic", "&&"), "or": ("_logic", "||"), "xor": ("_logic", "!="),
    "bit_and": ("_bits", "&"), "bit_or": ("_bits", "|"), "bit_xor": ("_bits", "^"),
    "shl": ("_shift", "irg_shl"), "shr": ("_shift", "irg_shr"),
    "isnan": ("_classify", "irg_isnan"), "isinf": ("_classify", "irg_isinf"),
    # on data-derived integers (rare: indices computed from loaded values)
    "idx_div": ("_infix", "/"), "idx_mod": ("_infix", "%"),
}


class CudaScalar:
    """Builds C expression text for one kernel-IR op (see the module docstring)."""

    def __init__(self, ix_type: str = "int"):
        self.ix_type = ix_type

    def ctype(self, v: C) -> str:
        return self.ix_type if v.ix else reg_type(v.dtype)

    def _round(self, text: str, d: DType) -> str:
        """A float32 result rounded back to a 16-bit float's precision."""
        if d is dt.float16:
            return f"irg_rh({text})"
        if d is dt.bfloat16:
            return f"irg_rbf({text})"
        return text

    def _fn(self, name: str, d: DType) -> str:
        return name if d is dt.float64 else name + "f"

    def op(self, op: str, args: list, out: DType, to: DType | None = None, ix: bool = False) -> C:
        check(out)
        for a in args:
            check(a.dtype)
        if op == "cast":
            return self.cast(args[0], to)
        if ix:
            return C(self._ix_op(op, [a.text for a in args]), out, True)
        if out in NARROW or any(a.dtype in NARROW for a in args):
            # computed in the carrier type (float32 / int8 / uint8), then rounded or wrapped back
            res = self.op(op, [C(a.text, carrier(a.dtype), a.ix) for a in args], carrier(out), to)
            return C(narrow_round(res.text, out), out) if out in NARROW else C(res.text, out)
        name = op.rstrip("_")
        if name in _BY_SYMBOL:
            method, sym = _BY_SYMBOL[name]
            return C(getattr(self, method)(sym, args, out), out)
        m = getattr(self, "op_" + name, None)
        if m is not None:
            return C(m(args, out), out)
        if op in _UNARY_F:
            return C(self._unary(op, args[0], out), out)
        if op in _CMP:
            return C(self._cmp(op, args), dt.bool_)
        raise LoweringError(f"the CUDA printer has no scalar op {op!r}")

    # ---- index arithmetic (non-negative, no overflow) ------------------------------------------
    def _ix_op(self, op: str, a: list) -> str:
        if op in _IX_INFIX:
            return f"({a[0]} {_IX_INFIX[op]} {a[1]})"
        if op in ("min", "max"):
            return f"({a[0]} {'<' if op == 'min' else '>'} {a[1]} ? {a[0]} : {a[1]})"
        if op == "neg":
            return f"(-{a[0]})"
        if op == "select":
            return f"({a[0]} ? {a[1]} : {a[2]})"
        raise LoweringError(f"internal: {op} is not an index op")

    # ---- casts ----------------------------------------------------------------------------------
    def cast(self, x: C, to: DType) -> C:
        check(to)
        src = x.dtype
        t = x.text
        if src is to and not x.ix:
            return x
        if src in NARROW:      # the register already holds an int8/uint8/float32 value
            return self.cast(C(t, carrier(src), x.ix), to)
        if to in NARROW_INTS:  # wrap the low bits, as ml_dtypes converts (through int64)
            w = self.cast(x, dt.int8 if src.is_bool else dt.int64)
            return C(narrow_round(w.text, to), to)
        if to in NARROW_FLOATS:  # through float32, as ml_dtypes converts
            return C(narrow_round(self.cast(x, dt.float32).text, to), to)
        rt = reg_type(to)
        if to.is_bool:
            return C(f"({t} != 0)", to)
        if x.ix:   # a pure index: a small non-negative-or-small integer
            if to.is_float:
                return C(self._round(f"(float)({t})", to) if to in _HALF else f"({rt})({t})", to)
            return C(f"({rt})({t})", to)
        if src.is_bool:
            return C(f"({rt})({t} ? 1 : 0)", to)
        if src.is_int and to.is_int:
            return C(f"({rt})({t})", to)
        if src.is_int:   # -> float
            if to in _HALF:
                f = f"(float)({t})" if src.bits <= 16 else f"irg_d2f_odd((double)({t}))"
                return C(self._round(f, to), to)
            return C(f"({rt})({t})", to)
        if to.is_int:    # float -> int, as numpy on x86
            if to is dt.uint64:
                return C(f"irg_f2u64((double)({t}))", to)
            if to is dt.int32:
                return C(f"irg_f2i32((double)({t}))", to)
            if to is dt.int64:
                return C(f"irg_f2i64((double)({t}))", to)
            return C(f"({rt})irg_f2i64((double)({t}))", to)
        # float -> float
        if to is dt.float64:
            return C(f"(double)({t})", to)
        if to is dt.float32:
            return C(f"(float)({t})", to)
        if to is dt.bfloat16:
            return C(self._round(f"(float)({t})", to), to)   # through float32, as ml_dtypes
        if src is dt.float64:      # -> float16: round once
            return C(self._round(f"irg_d2f_odd({t})", to), to)
        return C(self._round(t, to), to)

    # ---- arithmetic -----------------------------------------------------------------------------
    def _int_bin(self, sym: str, a: C, b: C, d: DType) -> str:
        u = _wide_unsigned(d)
        return f"({reg_type(d)})(({u})({a.text}) {sym} ({u})({b.text}))"

    def _arith(self, sym, args, out):
        a, b = args
        if out.is_float:
            return self._round(f"({a.text} {sym} {b.text})", out)
        if out.is_bool:
            return f"({a.text} {'||' if sym == '+' else '&&' if sym == '*' else '!='} {b.text})"
        return self._int_bin(sym, a, b, out)

    def _template(self, fn: str, out: DType, *texts: str) -> str:
        """A call of the prelude's integer template ``fn`` (division, powers, shifts)."""
        return f"{fn}<{reg_type(out)}>({', '.join(texts)})"

    def op_div(self, args, out):
        a, b = args
        if out.is_float:
            return self._round(f"({a.text} / {b.text})", out)
        return self._template("irg_idiv", out, a.text, b.text)

    def op_neg(self, args, out):
        a = args[0]
        if out.is_float:
            return f"(-{a.text})"
        return f"({reg_type(out)})(0 - ({_wide_unsigned(out)})({a.text}))"

    def op_fmod(self, args, out):
        a, b = args
        if out.is_float:
            return self._round(f"{self._fn('fmod', out)}({a.text}, {b.text})", out)
        return self._template("irg_irem", out, a.text, b.text)

    def op_mod(self, args, out):
        a, b = args
        if out.is_float:
            cast = "double" if out is dt.float64 else "float"
            return self._round(f"irg_fmodpy(({cast})({a.text}), ({cast})({b.text}))", out)
        return self._template("irg_imod", out, a.text, b.text)

    def op_pow(self, args, out):
        a, b = args
        bt = b.text if b.dtype is out else self.cast(b, out).text
        if out.is_float:
            return self._round(f"{self._fn('pow', out)}({a.text}, {bt})", out)
        return self._template("irg_ipow", out, a.text, bt)

    def _minmax(self, which, args, out):
        a, b = args
        if out.is_float:
            return f"irg_f{which}({a.text}, {b.text})"
        if out.is_bool:
            return f"({a.text} {'&&' if which == 'min' else '||'} {b.text})"
        sym = "<" if which == "min" else ">"
        return f"({a.text} {sym} {b.text} ? {a.text} : {b.text})"

    def op_abs(self, args, out):
        a = args[0]
        if out.is_float:
            return f"{self._fn('fabs', out)}({a.text})"
        if out.kind == "u" or out.is_bool:
            return a.text
        return f"({a.text} < 0 ? ({reg_type(out)})(0 - ({_wide_unsigned(out)})({a.text})) : {a.text})"

    def op_sign(self, args, out):
        a = args[0]
        t = a.text
        if out.is_float:
            one = const_text(1.0, out)
            return f"({t} > 0 ? {one} : ({t} < 0 ? -{one} : {t}))"
        if out.kind == "u":
            return f"({reg_type(out)})({t} != 0)"
        return f"({reg_type(out)})(({t} > 0) - ({t} < 0))"

    def op_rsqrt(self, args, out):
        a = args[0]
        one = const_text(1.0, dt.float64 if out is dt.float64 else dt.float32)
        return self._round(f"({one} / {self._fn('sqrt', out)}({a.text}))", out)

    def _unary(self, op, a: C, out):
        if not out.is_float:   # floor/ceil/round/abs of integers are the identity
            if op in ("floor", "ceil", "round"):
                return a.text
            raise LoweringError(f"the CUDA printer has no integer {op}")
        if op in ("sin", "cos", "tan"):   # the prelude's: no local memory (see prelude_trig.py)
            return self._round(f"{self._fn('irg_' + op, out)}({a.text})", out)
        return self._round(f"{self._fn(_UNARY_F[op], out)}({a.text})", out)

    def _cmp(self, op, args):
        return self._infix(_CMP[op], args, dt.bool_)

    def _infix(self, sym, args, out):
        return f"({args[0].text} {sym} {args[1].text})"

    # ---- logic and bits -------------------------------------------------------------------------
    def _logic(self, sym, args, out):
        return f"({self._b(args[0])} {sym} {self._b(args[1])})"

    def op_not(self, args, out):
        return f"(!{self._b(args[0])})"

    def _b(self, v: C) -> str:
        return v.text if v.dtype.is_bool else f"({v.text} != 0)"

    def _bits(self, sym, args, out):
        if out.is_bool:   # xor of truth values is !=
            return self._infix("!=" if sym == "^" else sym, args, out)
        return f"({reg_type(out)})(({args[0].text}) {sym} ({args[1].text}))"

    def op_bit_not(self, args, out):
        if out.is_bool:
            return f"(!{args[0].text})"
        return f"({reg_type(out)})(~({args[0].text}))"

    def _shift(self, fn, args, out):
        return self._template(fn, out, args[0].text, f"(irg_i64)({args[1].text})")

    def op_select(self, args, out):
        c, a, b = args
        return f"({self._b(c)} ? {a.text} : {b.text})"

    def _classify(self, fn, args, out):
        a = args[0]
        return f"{fn}((double)({a.text}))" if a.dtype.is_float else "false"

