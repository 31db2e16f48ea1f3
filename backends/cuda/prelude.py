"""The CUDA C prelude every generated translation unit starts with.

Helpers the scalar printer (``scalar_cuda.py``) calls, written once so the same source means the
same thing under nvcc (device code) and under g++ with the emulator header (host code):

- float16 / bfloat16 are stored as their 16 bits (``unsigned short``) and held in ``float``
  registers as exactly representable values; every op on them rounds its float32 result back
  (as numpy and ml_dtypes do). Conversions are bit-exact integer code, not intrinsics, so the
  emulator and the GPU round identically;
- integer ops follow numpy/ONNX: division truncates, ``x / 0 == 0``, ``mod`` takes the
  divisor's sign, shifts by the width or more give 0, overflow wraps;
- float -> int conversions return the x86 "integer indefinite" value for NaN and out-of-range
  inputs (what numpy gives), instead of the GPU's saturation;
- min/max propagate NaN as ``np.minimum``/``np.maximum``.
"""
from __future__ import annotations

from .prelude_narrow import NARROW
from .prelude_trig import TRIG

PRELUDE = r"""
// ---- irgraph CUDA prelude (generated code; see backends/cuda/prelude.py) ----
#ifndef IRG_PRELUDE
#define IRG_PRELUDE 1
#ifndef __CUDACC__
#include <cmath>
#include <cstring>
#endif
#define IRG_D __device__ __forceinline__
typedef long long irg_i64;
typedef unsigned long long irg_u64;

IRG_D unsigned irg_fbits(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
IRG_D float irg_bitsf(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
IRG_D irg_u64 irg_dbits(double f) { irg_u64 u; memcpy(&u, &f, 8); return u; }
IRG_D double irg_bitsd(irg_u64 u) { double f; memcpy(&f, &u, 8); return f; }
IRG_D float irg_inf() { return irg_bitsf(0x7f800000u); }
IRG_D float irg_nan() { return irg_bitsf(0x7fc00000u); }
IRG_D double irg_dinf() { return irg_bitsd(0x7ff0000000000000ull); }
IRG_D double irg_dnan() { return irg_bitsd(0x7ff8000000000000ull); }
IRG_D bool irg_isnan(double x) { return x != x; }
IRG_D bool irg_isinf(double x) { return x == irg_dinf() || x == -irg_dinf(); }

// float16 <-> float32, round to nearest even
IRG_D float irg_h2f(unsigned short h) {
  unsigned s = (unsigned)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1fu) return irg_bitsf(s | 0x7f800000u | (m << 13));
  if (e == 0) {
    if (m == 0) return irg_bitsf(s);
    float v = (float)m * irg_bitsf(0x33800000u);  // m * 2^-24
    return s ? -v : v;
  }
  return irg_bitsf(s | ((e + 112u) << 23) | (m << 13));
}
IRG_D unsigned short irg_f2h(float f) {
  unsigned u = irg_fbits(f), s = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return (unsigned short)(s | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u));
  if (a >= 0x477ff000u) return (unsigned short)(s | 0x7c00u);           // rounds to >= 65520: inf
  if (a < 0x38800000u) {                                                 // subnormal half or zero
    float v = irg_bitsf(a) * irg_bitsf(0x4b800000u);                     // |f| * 2^24
    float r = rintf(v);
    return (unsigned short)(s | (unsigned)r);
  }
  unsigned mant = a & 0x7fffffu, e = (a >> 23) - 112u;
  unsigned hm = mant >> 13, rest = mant & 0x1fffu;
  unsigned v = (e << 10) | hm;
  if (rest > 0x1000u || (rest == 0x1000u && (hm & 1u))) v++;
  return (unsigned short)(s | v);
}
IRG_D float irg_rh(float f) { return irg_h2f(irg_f2h(f)); }
// bfloat16 <-> float32 (ties to even; NaN stays a quiet NaN)
IRG_D float irg_bf2f(unsigned short b) { return irg_bitsf((unsigned)b << 16); }
IRG_D unsigned short irg_f2bf(float f) {
  unsigned u = irg_fbits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}
IRG_D float irg_rbf(float f) { return irg_bf2f(irg_f2bf(f)); }
// float64 -> float32 rounded to odd, so a second rounding (to half) is exact
IRG_D float irg_d2f_odd(double d) {
  float f = (float)d;
  double back = (double)f;
  if (back == d || d != d) return f;
  unsigned b = irg_fbits(f);
  if (fabs(back) > fabs(d)) b -= 1u;
  return irg_bitsf(b | 1u);
}

// float -> integer as numpy on x86: truncation; NaN / out of range -> the minimum value
IRG_D int irg_f2i32(double x) {
  return (x > -2147483649.0 && x < 2147483648.0) ? (int)x : (int)0x80000000u;
}
IRG_D irg_i64 irg_f2i64(double x) {
  return (x >= -9223372036854775808.0 && x < 9223372036854775808.0) ? (irg_i64)x
                                                                      : (irg_i64)0x8000000000000000ull;
}
IRG_D irg_u64 irg_f2u64(double x) {
  if (x < 0.0) return (irg_u64)irg_f2i64(x);
  if (x != x) return 0x8000000000000000ull;
  return x >= 18446744073709551616.0 ? ~0ull : (irg_u64)x;
}

// NaN-propagating min / max (np.minimum / np.maximum)
IRG_D float irg_fmin(float a, float b) { return (a != a || a < b) ? a : b; }
IRG_D float irg_fmax(float a, float b) { return (a != a || a > b) ? a : b; }
IRG_D double irg_fmin(double a, double b) { return (a != a || a < b) ? a : b; }
IRG_D double irg_fmax(double a, double b) { return (a != a || a > b) ? a : b; }

// remainder with the divisor's sign (Python / numpy %)
IRG_D float irg_fmodpy(float a, float b) {
  float r = fmodf(a, b);
  if (r != 0.0f && ((r < 0.0f) != (b < 0.0f))) r += b;
  if (r == 0.0f) r = copysignf(0.0f, b);
  return r;
}
IRG_D double irg_fmodpy(double a, double b) {
  double r = fmod(a, b);
  if (r != 0.0 && ((r < 0.0) != (b < 0.0))) r += b;
  if (r == 0.0) r = copysign(0.0, b);
  return r;
}

// integer division / remainder: x / 0 == 0, MIN / -1 wraps, never a trap
template <class T> IRG_D T irg_idiv(T a, T b) {
  if (b == 0) return 0;
  if ((T)(b + 1) == 0 && (T)-1 < 0) return (T)(0 - (irg_u64)a);
  return a / b;
}
template <class T> IRG_D T irg_irem(T a, T b) {
  if (b == 0) return 0;
  if ((T)(b + 1) == 0 && (T)-1 < 0) return 0;
  return a % b;
}
template <class T> IRG_D T irg_imod(T a, T b) {
  T r = irg_irem(a, b);
  if ((T)-1 < 0 && r != 0 && ((r < 0) != (b < 0))) r = (T)(r + b);
  return r;
}
template <class T> IRG_D T irg_ipow(T x, T y) {
  if ((T)-1 < 0 && y < 0) return x == 1 ? (T)1 : (x == (T)-1 ? ((y & 1) ? (T)-1 : (T)1) : (T)0);
  T acc = 1, base = x;
  irg_u64 e = (irg_u64)y;
  while (e) { if (e & 1) acc = (T)(acc * base); base = (T)(base * base); e >>= 1; }
  return acc;
}
template <class T> IRG_D T irg_shl(T a, irg_i64 s) { return (s < 0 || s >= (irg_i64)(8 * sizeof(T))) ? (T)0 : (T)((irg_u64)a << s); }
template <class T> IRG_D T irg_shr(T a, irg_i64 s) {
  if (s < 0 || s >= (irg_i64)(8 * sizeof(T))) return (T)-1 < 0 && a < 0 ? (T)-1 : (T)0;
  return (T)(a >> s);
}
// an index read from data, saturated into the 32-bit index range (later clamps give the
// same result as with 64-bit indices)
IRG_D int irg_sat_ix(irg_i64 v) { return v > 2147483647LL ? 2147483647 : (v < -2147483647LL ? -2147483647 : (int)v); }
"""

# sin/cos/tan without local memory, the narrow types, then the end of the include guard
PRELUDE += TRIG + NARROW + "#endif\n"
