"""The narrow element types in the CUDA prelude: float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e8m0),
float4e2m1 and the 4- and 2-bit integers, each stored in one byte as ml_dtypes stores them.

As in the CPU backend (``cpu/scalar_llvm.py``, whose format table this reads): a narrow float
is held in a ``float`` register as an exactly representable value — decoded on load, rounded
(encode + decode) after every op, encoded on store — and a narrow integer in a ``signed char``
/ ``unsigned char`` register holding its sign- or zero-extended value, wrapped after every op;
memory keeps the low bits. The encoder is the CPU's: round to nearest even, overflow and NaN
as ml_dtypes converts.
"""
from __future__ import annotations

from irgraph import dtype as dt

from ..cpu.scalar_llvm import SMALL_FLOATS, SMALL_INTS

NARROW_INTS = tuple(SMALL_INTS)
NARROW_FLOATS = tuple(SMALL_FLOATS)


def short(d) -> str:
    return d.name.replace("float8", "f8").replace("float4", "f4")


def _float_fns(d) -> str:
    n = short(d)
    if d is dt.float8e8m0:
        return f"""
IRG_D float irg_dec_{n}(unsigned c) {{
  c &= 0xffu;
  return c == 0xffu ? irg_nan() : (c == 0 ? irg_bitsf(0x00400000u) : irg_bitsf(c << 23));
}}
IRG_D unsigned irg_enc_{n}(float x) {{   // a normal keeps its exponent (+1 when its top mantissa
  const unsigned bits = irg_fbits(x), ef = (bits >> 23) & 0xffu;   // bit is set), as ml_dtypes
  unsigned nrm = ef + ((bits >> 22) & 1u);
  if (nrm > 0xffu) nrm = 0xffu;
  const unsigned code = ef == 0 ? (x > irg_bitsf(0x00400000u) ? 1u : 0u) : nrm;
  return (!(x > 0.0f) || ef == 0xffu) ? 0xffu : code;
}}
IRG_D float irg_r_{n}(float x) {{ return irg_dec_{n}(irg_enc_{n}(x)); }}
"""
    M, bias, emin, maxe, maxm, over, nan_code, inf_code, negzero, sbit = SMALL_FLOATS[d]
    mmask, smask = (1 << M) - 1, (1 << sbit) - 1
    emax_field = (1 << (sbit - M)) - 1
    # decode: the special codes of each format, then sign * (subnormal | normal) value
    special = []
    if nan_code is not None and not negzero:          # fnuz: 0x80 is the only NaN, no -0
        special.append(f"if (c == 0x{nan_code:x}u) return irg_nan();")
    elif nan_code is not None and inf_code is None:   # e4m3fn: S.1111.111 is NaN
        special.append(f"if ((c & 0x{smask:x}u) == 0x{nan_code:x}u) return irg_nan();")
    if inf_code is not None:                          # e5m2: all-ones exponent, IEEE-like
        special.append(f"if (((c & 0x{smask:x}u) >> {M}) == {emax_field}u) "
                       f"return (c & {mmask}u) ? irg_nan() : ((c >> {sbit}) & 1u ? -irg_inf() : irg_inf());")
    ovc_sat = (maxe << M) | maxm
    if over == "sat":
        ovc = f"({ovc_sat}u | sgn)"
    elif over == "inf":
        ovc = f"(0x{inf_code:x}u | sgn)"
    else:
        ovc = f"(0x{nan_code:x}u | sgn)" if negzero else f"0x{nan_code:x}u"
    if nan_code is None:          # float4: NaN becomes a zero of the opposite sign (ml_dtypes)
        nanc = f"((sign ^ 1u) << {sbit})"
    else:
        nanc = f"(0x{nan_code:x}u | sgn)" if negzero else f"0x{nan_code:x}u"
    code = "(mag | sgn)" if negzero else "(mag == 0 ? 0u : (mag | sgn))"
    return f"""
IRG_D float irg_dec_{n}(unsigned c) {{
  c &= 0x{(1 << (sbit + 1)) - 1:x}u;
  {" ".join(special)}
  const unsigned mag = c & 0x{smask:x}u, e = mag >> {M}, m = mag & {mmask}u;
  const float v = e == 0 ? ldexpf((float)m, {1 - bias - M}) : ldexpf((float)(m + {1 << M}u), (int)e - {bias + M});
  return (c >> {sbit}) & 1u ? -v : v;
}}
IRG_D unsigned irg_enc_{n}(float x) {{
  const unsigned bits = irg_fbits(x), sign = bits >> 31, sgn = sign << {sbit};
  const float a = fabsf(x);
  int e = (int)((irg_fbits(a) >> 23) & 0xffu) - 127;
  e = e < {emin} ? {emin} : (e > 126 ? 126 : e);
  const float m = rintf(a * irg_bitsf((unsigned)({M} - e + 127) << 23));
  const bool big = m >= {float(1 << (M + 2))}f;
  unsigned mi = (unsigned)(big ? {float(1 << (M + 2))}f : m);
  if (mi >= {1 << (M + 1)}u) {{ e += 1; mi >>= 1; }}
  const bool normal = mi >= {1 << M}u;
  const int ef = normal ? e + {bias} : 0;
  const unsigned mant = normal ? mi - {1 << M}u : mi;
  const bool overflow = big || ef > {maxe} || (ef == {maxe} && mant > {maxm}u);
  const unsigned mag = ((unsigned)ef << {M}) | mant;
  unsigned code = overflow ? {ovc} : {code};
  if (a == irg_inf()) code = {ovc};
  if (x != x) code = {nanc};
  return code;
}}
IRG_D float irg_r_{n}(float x) {{ return irg_dec_{n}(irg_enc_{n}(x)); }}
"""


NARROW = ("\n// ---- narrow types (backends/cuda/prelude_narrow.py) ----\n"
          "IRG_D signed char irg_wraps(int v, int bits) {\n"
          "  return (signed char)((int)((unsigned)v << (32 - bits)) >> (32 - bits));\n}\n"
          "IRG_D unsigned char irg_wrapu(int v, int bits) { return (unsigned char)(v & ((1 << bits) - 1)); }\n"
          + "".join(_float_fns(d) for d in NARROW_FLOATS))
