"""Lowering rule for casts to float8e8m0 (the scale-only type: 2**-127 .. 2**127 and NaN).

ONNX rounds to a power of two by ``round_mode`` (up, down, nearest with ties up) and either
saturates (0 -> 2**-127, inf and overflow -> 2**127) or gives NaN. The scalar-builder ``cast``
has no rounding mode, so this rule computes the power of two itself with exact float64
arithmetic and then casts a value e8m0 holds exactly:

1. v = |x| clamped to [2**-129, 2**129] (anything beyond rounds out of range either way);
2. a branch-free binary search scales v by powers of two into s in [1, 2) and counts the
   exponent k, so v = s * 2**k (every step is a select; multiplying by 2**n is exact);
3. up: k + (s > 1); down: k; nearest: k + (s >= 1.5);
4. out of [-127, 127]: clipped (saturate) or NaN; the result 2**k is built by the same kind of
   selects from 2**-127.

Every other cast lowers through the registry formula (``rule_elementwise``); casts *from*
e8m0 need nothing special (the backends decode e8m0 to float32 exactly).
"""
from __future__ import annotations

from irgraph import dtype as dt

from . import lower_ops
from .kernel_ir import Const
from .lower_ops import _out, rule_elementwise
from .lower_tensor import Map

_F64 = dt.float64
_STEPS = (128, 64, 32, 16, 8, 4, 2, 1)


def _c(v: float) -> Const:
    return Const(v, _F64)


def e8m0_round(b, x, saturate: bool, round_mode: str):
    """The float64 power of two (or NaN) that ONNX's cast of scalar ``x`` to e8m0 gives."""
    v = b.abs(b.cast(x, _F64))
    nan = b.isnan(v)
    v = b.min(b.max(v, _c(2.0 ** -129)), _c(2.0 ** 129))
    s, k = v, _c(0.0)
    for n in _STEPS:                      # s < 2**256 on entry: afterwards s < 2
        big = b.ge(s, _c(2.0 ** n))
        s = b.select(big, b.mul(s, _c(2.0 ** -n)), s)
        k = b.select(big, b.add(k, _c(float(n))), k)
    for n in _STEPS:                      # s >= 2**-129 on entry: afterwards s >= 1
        small = b.lt(b.mul(s, _c(2.0 ** n)), _c(2.0))
        s = b.select(small, b.mul(s, _c(2.0 ** n)), s)
        k = b.select(small, b.sub(k, _c(float(n))), k)
    if round_mode == "up":
        k = b.select(b.gt(s, _c(1.0)), b.add(k, _c(1.0)), k)
    elif round_mode == "nearest":
        k = b.select(b.ge(s, _c(1.5)), b.add(k, _c(1.0)), k)
    bad = nan
    if saturate:
        k = b.min(b.max(k, _c(-127.0)), _c(127.0))
    else:
        bad = b.or_(bad, b.or_(b.lt(k, _c(-127.0)), b.gt(k, _c(127.0))))
        k = b.min(b.max(k, _c(-127.0)), _c(127.0))
    e = b.add(k, _c(127.0))               # 0 .. 254: 2**k = 2**-127 * prod of its binary digits
    r = _c(2.0 ** -127)
    for n in _STEPS:
        on = b.ge(e, _c(float(n)))
        r = b.select(on, b.mul(r, _c(2.0 ** n)), r)
        e = b.select(on, b.sub(e, _c(float(n))), e)
    return b.select(bad, _c(float("nan")), r)


def rule_cast(ctx, n, ins):
    shape, odt = _out(n)
    src = ins[0].dtype if ins[0] is not None else None
    numeric = src is not None and (src.is_float or src.is_int or src.is_bool)
    if odt is not dt.float8e8m0 or src is dt.float8e8m0 or not numeric:
        return rule_elementwise(ctx, n, ins)
    sat, mode = bool(n.attrs["saturate"]), n.attrs["round_mode"]

    def formula(b, x):
        return b.cast(e8m0_round(b, x, sat, mode), dt.float8e8m0)
    return [Map(formula, [ins[0]], {}, shape, src, ctx, out_dtype=odt)]


RULES: dict = {"cast": rule_cast}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
