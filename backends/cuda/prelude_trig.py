"""sin, cos and tan for the CUDA prelude, without local memory.

CUDA's own ``sinf``/``sin``/``tan`` reduce huge arguments (Payne-Hanek) into a local array:
ptxas gives every kernel that calls them a stack frame (32-40 bytes on sm_90), which the
compile gate rejects. These compute in double precision for float and double arguments alike:

- ``|x| <= pi/4``: ``r = x``;
- otherwise ``x * 2/pi`` modulo 4 from exact products: ``|x|`` is split into a 26-bit and a
  27-bit part and 2/pi into 24-bit chunks (``IRG_2OPI24``, from ``__constant__`` memory, indexed
  by the exponent so that chunks contributing only multiples of 4 are skipped); every product
  is exact, is reduced modulo 4 exactly, and the nine pairs are summed with a compensated
  (TwoSum) accumulator, which leaves ~100 correct bits — enough for the worst double near a
  multiple of pi/2. The quadrant is the integer part, ``r`` the remainder times pi/2 (double-double);
- Taylor polynomials of sin and cos on ``[-pi/4, pi/4]`` (truncation below 1e-19 relative).

Results are within about one double ulp, so float results are correctly rounded but for rare
double-rounding cases. The same text runs under nvcc and in the emulator.
"""
from __future__ import annotations

# 2/pi = sum_i IRG_2OPI24[i] * 2^(-24 (i + 1)); computed with exact integer arithmetic (Machin's
# formula to 1500 bits): A2F9836E 4E441529 FC2757D1 ...
_CHUNKS = (
    "0xa2f983u, 0x6e4e44u, 0x1529fcu, 0x2757d1u, 0xf534ddu, 0xc0db62u, 0x95993cu, 0x439041u,\n"
    "  0xfe5163u, 0xabdebbu, 0xc561b7u, 0x246e3au, 0x424dd2u, 0xe00649u, 0x2eea09u, 0xd1921cu,\n"
    "  0xfe1debu, 0x1cb129u, 0xa73ee8u, 0x8235f5u, 0x2ebb44u, 0x84e99cu, 0x7026b4u, 0x5f7e41u,\n"
    "  0x3991d6u, 0x398353u, 0x39f49cu, 0x845f8bu, 0xbdf928u, 0x3b1ff8u, 0x97ffdeu, 0x05980fu,\n"
    "  0xef2f11u, 0x8b5a0au, 0x6d1f6du, 0x367ecfu, 0x27cb09u, 0xb74f46u, 0x3f669eu, 0x5fea2du,\n"
    "  0x7527bau, 0xc7ebe5u, 0xf17b3du, 0x0739f7u, 0x8a5292u, 0xea6bfbu, 0x5fb11fu, 0x8d5d08u")

# Taylor coefficients in z = r * r on [-pi/4, pi/4], highest power first:
# sin(r) = r + r z P_sin(z), cos(r) = 1 - z/2 + z^2 P_cos(z)
_SIN_POLY = (
    "-0x1.761b41316381ap-75", "0x1.71b8ef6dcf572p-66", "-0x1.2f49b46814157p-57",
    "0x1.952c77030ad4ap-49", "-0x1.ae7f3e733b81fp-41", "0x1.6124613a86d09p-33",
    "-0x1.ae64567f544e4p-26", "0x1.71de3a556c734p-19", "-0x1.a01a01a01a01ap-13",
    "0x1.1111111111111p-7", "-0x1.5555555555555p-3")
_COS_POLY = (
    "-0x1.0ce396db7f853p-70", "0x1.e542ba4020225p-62", "-0x1.6827863b97d97p-53",
    "0x1.ae7f3e733b81fp-45", "-0x1.93974a8c07c9dp-37", "0x1.1eed8eff8d898p-29",
    "-0x1.27e4fb7789f5cp-22", "0x1.a01a01a01a01ap-16", "-0x1.6c16c16c16c17p-10",
    "0x1.5555555555555p-5")


def _horner(coeffs: tuple) -> str:
    """C statements leaving ``p`` = the polynomial in ``z`` (coefficients highest first), one fma
    per step, two steps a line."""
    steps = [f"p = fma(p, z, {c});" for c in coeffs[1:]]
    lines = [" ".join(steps[i:i + 2]) for i in range(0, len(steps), 2)]
    return f"  double p = {coeffs[0]};\n" + "".join(f"  {line}\n" for line in lines)


TRIG = r"""
// ---- sin / cos / tan without local memory (backends/cuda/prelude_trig.py) ----
__constant__ unsigned IRG_2OPI24[48] = {
  """ + _CHUNKS + r"""};
struct irg_red { double r; int q; };
// ax finite and > pi/4: ax = (4k + q) * pi/2 + r, |r| <= ~pi/4
IRG_D irg_red irg_rem_pio2(double ax) {
  const int E = (int)((irg_dbits(ax) >> 52) & 0x7ff) - 1023;
  const int i0 = E > 80 ? (E - 80) / 24 : 0;           // chunks before i0 give multiples of 4
  // scaled by 2^(-24 i0) so the chunks' weights stay in range: products are exact either way
  const double xs = ax * irg_bitsd((irg_u64)(1023 - 24 * i0) << 52);
  const double xh = irg_bitsd(irg_dbits(xs) & 0xfffffffff8000000ull), xl = xs - xh;
  double hi = 0.0, lo = 0.0, w = 1.0;
#pragma unroll
  for (int j = 0; j < 9; ++j) {
    w *= 0x1p-24;
    const double c = (double)IRG_2OPI24[i0 + j] * w;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      double p = (h ? xl : xh) * c;                      // exact: 26 (27) x 24 bits
      p -= 4.0 * floor(p * 0.25);                        // exact: p mod 4
      const double s = hi + p, b = s - hi;               // TwoSum
      lo += (hi - (s - b)) + (p - b);
      hi = s;
    }
  }
  const double k = rint(hi);
  const double f = (hi - k) + lo;
  irg_red out;
  out.q = (int)k & 3;
  out.r = fma(f, 0x1.921fb54442d18p+0, f * 0x1.1a62633145c07p-54);
  return out;
}
IRG_D double irg_sin_poly(double r) {
  const double z = r * r;
""" + _horner(_SIN_POLY) + r"""  return fma(r * z, p, r);
}
IRG_D double irg_cos_poly(double r) {
  const double z = r * r;
""" + _horner(_COS_POLY) + r"""  return fma(z * z, p, fma(-0.5, z, 1.0));
}
// which: 0 sin, 1 cos, 2 tan
IRG_D double irg_trig(double x, int which) {
  const double ax = fabs(x);
  if (!(ax <= 0x1.fffffffffffffp+1023)) return x - x;   // inf, nan -> nan
  double r = ax;
  int q = 0;
  if (ax > 0x1.921fb54442d18p-1) { const irg_red red = irg_rem_pio2(ax); r = red.r; q = red.q; }
  const double s = irg_sin_poly(r), c = irg_cos_poly(r);
  const bool neg = (irg_dbits(x) >> 63) != 0;
  double v;
  if (which == 1) {
    v = (q & 1) ? s : c;
    return ((q + 1) & 2) ? -v : v;
  }
  if (which == 0) {
    v = (q & 1) ? c : s;
    if (q & 2) v = -v;
  } else {
    v = (q & 1) ? -c / s : s / c;
  }
  return neg ? -v : v;
}
IRG_D double irg_sin(double x) { return irg_trig(x, 0); }
IRG_D double irg_cos(double x) { return irg_trig(x, 1); }
IRG_D double irg_tan(double x) { return irg_trig(x, 2); }
IRG_D float irg_sinf(float x) { return (float)irg_trig((double)x, 0); }
IRG_D float irg_cosf(float x) { return (float)irg_trig((double)x, 1); }
IRG_D float irg_tanf(float x) { return (float)irg_trig((double)x, 2); }
"""
