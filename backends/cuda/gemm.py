"""The CUDA GEMM template: ``C[t] = A[t] @ B[t]`` (fp32) with shared-memory tiling, register
blocking and a fused epilogue; the matmul and im2col-convolution lowerings reach it through
``LowerCtx.templates`` (``CudaTemplates.matmul``), as an ``ExternCall("cuda_gemm")``.

Operands are general strided views (``off + t*sb + i*si + k*sk``), so transposed, batched and
broadcast operands need no copies; all sizes and strides are compile-time constants of the
generated function. A block computes a ``BM x BN`` tile of one batch item (``blockIdx.z``):
each ``BK`` slice of A and B is staged in shared memory (loaded along the operand's unit-stride
dimension, so global reads coalesce), then every thread accumulates a ``TM x TN`` register
tile whose rows/columns are interleaved ``BM/TM`` / ``BN/TN`` apart (conflict-free shared
reads, coalesced stores). Edges are predicated, so no shape needs to be a tile multiple.

Configurations (256 threads each; the ptxas figures are in the backend's README section):
``small`` 32x64x16 (2x4 per thread) for short M, ``mid`` 64x64x16 (4x4), ``large``
128x128x8 (8x8, launch bounds cap it at 128 registers for two blocks per SM).
"""
from __future__ import annotations

from dataclasses import dataclass

from irgraph import dtype as dt

from ..kernel_ir import ExternCall

THREADS = 256


@dataclass(frozen=True)
class GemmConfig:
    name: str
    bm: int
    bn: int
    bk: int
    tm: int
    tn: int
    min_blocks: int = 1

    @property
    def ry(self) -> int:
        return self.bm // self.tm

    @property
    def rx(self) -> int:
        return self.bn // self.tn


SMALL = GemmConfig("small", 32, 64, 16, 2, 4, 2)
MID = GemmConfig("mid", 64, 64, 16, 4, 4, 2)
LARGE = GemmConfig("large", 128, 128, 8, 8, 8, 2)
CONFIGS = (SMALL, MID, LARGE)


def choose(M: int, N: int, K: int, batch: int) -> GemmConfig:
    if M <= 32:
        return SMALL
    if M >= 128 and N >= 128 and (M * N * batch) >= (1 << 16):
        return LARGE
    return MID


class CudaTemplates:
    """What the CUDA backend computes with hand-written kernels (passed to ``lower_node``)."""

    def conv(self, ctx, n, x, w, bias, plan, shape, odt):
        """Convolution as an implicit GEMM (``conv.py``): the lowered output, or None."""
        from .conv import lower_conv
        return lower_conv(ctx, n, x, w, bias, plan, shape, odt)

    def matmul(self, ctx, A, B, C) -> bool:
        """``C[t] = A[t] @ B[t]`` for (batch, M, K) x (batch, K, N) -> (batch, M, N) float32 views."""
        from ..lower_tensor import View
        if not (A.dtype is B.dtype is C.dtype is dt.float32) or not isinstance(C, View):
            return False
        nb, M, K = A.shape
        N = B.shape[2]
        if min(M, N, K, nb) == 0:
            return False
        A, B = ctx.force(A), ctx.force(B)
        ctx.body.append(ExternCall("cuda_gemm", [A.buf, B.buf, C.buf], {
            "M": M, "N": N, "K": K, "batch": nb,
            "a_off": A.offset, "a_sb": A.strides[0], "a_sm": A.strides[1], "a_sk": A.strides[2],
            "b_off": B.offset, "b_sb": B.strides[0], "b_sk": B.strides[1], "b_sn": B.strides[2],
            "c_off": C.offset, "c_sb": C.strides[0], "c_sm": C.strides[1], "c_sn": C.strides[2]}))
        return True


def launch_dims(a: dict, cfg: GemmConfig) -> tuple:
    gx = -(-a["N"] // cfg.bn)
    gy = -(-a["M"] // cfg.bm)
    return (gx, gy, a["batch"]), (THREADS, 1, 1)


def flops_bytes(a: dict) -> tuple[int, int]:
    """(floating-point operations, compulsory bytes moved) of one call."""
    M, N, K, B = a["M"], a["N"], a["K"], a["batch"]
    nb_a = B if a["a_sb"] else 1
    nb_b = B if a["b_sb"] else 1
    return 2 * M * N * K * B, 4 * (nb_a * M * K + nb_b * K * N + B * M * N)


def gemm_source(fn: str, params: str, a: dict, cfg: GemmConfig, ix: str, epilogue: list[str],
                names: tuple[str, str, str]) -> list[str]:
    """The ``__global__`` function text. ``epilogue``: lines run for each in-range output with
    ``irg_t``, ``irg_m``, ``irg_n`` (ix) and ``irg_v`` (float) defined; ``names``: the C names of
    the A, B, C pointers."""
    An, Bn, _ = names
    K = a["K"]
    a_kfast = a["a_sk"] == 1 or a["a_sm"] != 1
    b_nfast = a["b_sn"] == 1 or a["b_sk"] != 1
    head = ["  const ix irg_t = blockIdx.z;",
            f"  const ix irg_ab = {a['a_off']} + irg_t * {a['a_sb']};",
            f"  const ix irg_bb = {a['b_off']} + irg_t * {a['b_sb']};"]
    a_tile = a_tile_lines(cfg, a_kfast, a["M"], K, An, "irg_ab", a["a_sm"], a["a_sk"])
    # B tile: BK x BN, element e -> (kk, nn) along B's unit-stride dimension
    if b_nfast:
        kk, nn = f"irg_e / {cfg.bn}", f"irg_e % {cfg.bn}"
    else:
        kk, nn = f"irg_e % {cfg.bk}", f"irg_e / {cfg.bk}"
    b_tile = [f"    for (int irg_e = irg_tid; irg_e < {cfg.bk * cfg.bn}; irg_e += {THREADS}) {{",
              f"      const int kk = {kk}, nn = {nn};",
              "      const ix k = irg_k0 + kk, n = irg_n0 + nn;",
              f"      irg_Bs[kk][nn] = (k < {K} && n < {a['N']}) ? {Bn}[irg_bb + k * {a['b_sk']} + n * {a['b_sn']}] : 0.0f;",
              "    }"]
    return tiled_source(fn, params, cfg, ix, a["M"], a["N"], K, head, a_tile, b_tile, epilogue,
                        pad_a=1 if a_kfast else 0, pad_b=0 if b_nfast else 1)


def a_tile_lines(cfg: GemmConfig, kfast: bool, M: int, K: int, An: str, base: str, sm: int, sk: int) -> list[str]:
    """Loop filling ``irg_As[kk][mm]`` (BM x BK of A) along A's unit-stride dimension."""
    if kfast:
        mm, kk = f"irg_e / {cfg.bk}", f"irg_e % {cfg.bk}"
    else:
        mm, kk = f"irg_e % {cfg.bm}", f"irg_e / {cfg.bm}"
    return [f"    for (int irg_e = irg_tid; irg_e < {cfg.bm * cfg.bk}; irg_e += {THREADS}) {{",
            f"      const int mm = {mm}, kk = {kk};",
            "      const ix m = irg_m0 + mm, k = irg_k0 + kk;",
            f"      irg_As[kk][mm] = (m < {M} && k < {K}) ? {An}[{base} + m * {sm} + k * {sk}] : 0.0f;",
            "    }"]


def tiled_source(fn: str, params: str, cfg: GemmConfig, ix: str, M: int, N: int, K: int, head: list[str],
                 a_tile: list[str], b_tile: list[str], epilogue: list[str], pad_a: int = 0,
                 pad_b: int = 0, setup: list[str] | None = None) -> list[str]:
    """The shared body of the GEMM and implicit-GEMM convolution kernels: ``head`` defines
    ``irg_t`` and per-batch bases, ``setup`` per-thread constants, ``a_tile``/``b_tile`` fill
    ``irg_As[kk][mm]`` / ``irg_Bs[kk][nn]`` for the BK slice at ``irg_k0`` (0 outside the
    operands), then the register-blocked FMA loop and the predicated epilogue."""
    L = [f'extern "C" __global__ void __launch_bounds__({THREADS}, {cfg.min_blocks}) {fn}({params}) {{',
         f"  typedef {ix} ix;",
         f"  __shared__ float irg_As[{cfg.bk}][{cfg.bm + pad_a}];",
         f"  __shared__ float irg_Bs[{cfg.bk}][{cfg.bn + pad_b}];",
         "  const int irg_tid = threadIdx.x;",
         f"  const int irg_tx = irg_tid % {cfg.rx}, irg_ty = irg_tid / {cfg.rx};",
         f"  const ix irg_m0 = (ix)blockIdx.y * {cfg.bm}, irg_n0 = (ix)blockIdx.x * {cfg.bn};"]
    L += head + list(setup or [])
    L += [f"  float irg_acc[{cfg.tm}][{cfg.tn}];",
          "#pragma unroll",
          f"  for (int i = 0; i < {cfg.tm}; ++i)",
          "#pragma unroll",
          f"    for (int j = 0; j < {cfg.tn}; ++j) irg_acc[i][j] = 0.0f;",
          f"  for (ix irg_k0 = 0; irg_k0 < {K}; irg_k0 += {cfg.bk}) {{"]
    L += a_tile + b_tile
    L += ["    __syncthreads();",
          "#pragma unroll",
          f"    for (int kk = 0; kk < {cfg.bk}; ++kk) {{",
          f"      float ra[{cfg.tm}], rb[{cfg.tn}];",
          "#pragma unroll",
          f"      for (int i = 0; i < {cfg.tm}; ++i) ra[i] = irg_As[kk][irg_ty + i * {cfg.ry}];",
          "#pragma unroll",
          f"      for (int j = 0; j < {cfg.tn}; ++j) rb[j] = irg_Bs[kk][irg_tx + j * {cfg.rx}];",
          "#pragma unroll",
          f"      for (int i = 0; i < {cfg.tm}; ++i)",
          "#pragma unroll",
          f"        for (int j = 0; j < {cfg.tn}; ++j) irg_acc[i][j] = fmaf(ra[i], rb[j], irg_acc[i][j]);",
          "    }",
          "    __syncthreads();",
          "  }",
          "#pragma unroll",
          f"  for (int i = 0; i < {cfg.tm}; ++i) {{",
          "#pragma unroll",
          f"    for (int j = 0; j < {cfg.tn}; ++j) {{",
          f"      const ix irg_m = irg_m0 + irg_ty + i * {cfg.ry}, irg_n = irg_n0 + irg_tx + j * {cfg.rx};",
          f"      if (irg_m < {M} && irg_n < {N}) {{",
          "        const float irg_v = irg_acc[i][j];"]
    L += ["        " + line for line in epilogue]
    L += ["      }", "    }", "  }", "}"]
    return L


def default_epilogue(a: dict, cname: str) -> list[str]:
    return [f"{cname}[{a['c_off']} + irg_t * {a['c_sb']} + irg_m * {a['c_sm']} + irg_n * {a['c_sn']}] = irg_v;"]
