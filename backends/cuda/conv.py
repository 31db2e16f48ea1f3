"""The CUDA convolution templates: implicit GEMM, and a direct kernel for depthwise-like groups.

``out[nb, g*Mg + m, p] = sum_k W[g*Mg + m, k] * col[nb, g, k, p]`` is a GEMM per (image, group)
whose B operand, the im2col matrix, is never stored: each ``BK x BN`` slice of it is gathered
from the input straight into shared memory inside the tiled GEMM loop (``gemm.tiled_source``),
with the zero padding, strides and dilations applied as predicates on the gather. Every thread
loads the same column ``n`` of each B slice (``THREADS`` is a multiple of ``BN``), so the output
coordinates of that column and its window origin are computed once per thread; only the row
``k -> (ci, taps)`` is decomposed per element (division by compile-time constants). Adjacent
threads read adjacent output pixels: coalesced for stride 1.

Groups: the batch index of the GEMM is ``t = nb * G + g`` (``blockIdx.z``); output channels
are contiguous per group, so the output of item ``t`` starts at ``t * Mg * P`` and the GEMM's
``(t, m, n)`` store layout — and with it the fused epilogue (bias, activation, residual; see
``stages.fuse_epilogues``) — is the matmul template's. When a group has fewer than
``DIRECT_MAX_MG`` output channels (depthwise convolutions) a GEMM tile would be mostly empty,
so a direct kernel computes one output per thread instead, with the same epilogue.

The lowering reaches these through ``LowerCtx.templates.conv`` (the hook in
``backends/lower_contract.rule_conv``); anything they do not cover (non-float32, empty
shapes) returns None and takes the generic path.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt

from ..kernel_ir import ExternCall
from .gemm import CONFIGS, LARGE, MID, SMALL, THREADS, GemmConfig, a_tile_lines, tiled_source

# Output channels per group below which the direct kernel is used (depthwise: 1).
DIRECT_MAX_MG = 8
# Blocks that keep every SM of an H100 (132) busy: tile choice prefers reaching this first.
TARGET_BLOCKS = 132
MAX_GRID_Z = 65535


def lower_conv(ctx, n, x, w, bias, plan, shape, odt):
    """The lowered output of conv node ``n`` (a list of one value), or None when not covered."""
    from ..lower_tensor import Map, Pending
    if not (odt is dt.float32 and x.dtype is dt.float32 and w.dtype is dt.float32):
        return None
    if bias is not None and bias.dtype is not dt.float32:
        return None
    if x.size == 0 or w.size == 0 or int(np.prod(shape)) == 0 or len(w.shape) < 3:
        return None
    group = int(n.attrs["group"])
    Nb = x.shape[0]
    Mg = w.shape[0] // group
    direct = Mg < DIRECT_MAX_MG or Nb * group > MAX_GRID_Z

    def emit(c, dest):
        from ..lower_tensor import Generic, View
        P = int(np.prod(plan.out))
        out = dest.try_reshape((Nb * group, Mg, P))
        tmp = None
        if out is None:
            # an output view the (t, m, n) store cannot address (a channel slice of a concat
            # with groups): compute into a temp, then copy (stages may fold the copy back in)
            tmp = View.of(c.buffer("convout", dest.dtype, dest.shape, "temp"), c)
            out = tmp.try_reshape((Nb * group, Mg, P))
        c.body.append(_call(c, x, w, plan, group, out, direct))
        if tmp is not None:
            c.store(Generic(tmp.shape, tmp.dtype, c, tmp.at, 0), dest)
    p = Pending(tuple(shape), odt, ctx, emit, "conv")
    if bias is None:
        return [p]
    # the bias joins the elementwise epilogue: conv + bias + activation (+ residual) is one store
    p.single_use = True
    bb = bias.reshape((1, shape[1]) + (1,) * (len(shape) - 2))
    return [Map(lambda b_, y, z: b_.add(y, z), [p, bb.broadcast_to(tuple(shape))], {}, tuple(shape), odt, ctx)]


def _weights(c, w, group: int):
    """W as a (G, Mg, K) view with K unit-stride (re-laid out when it is not)."""
    from ..lower_tensor import Generic, View
    W = c.force(w)
    M = W.shape[0]
    K = int(np.prod(W.shape[1:]))
    v = W.try_reshape((group, M // group, K))
    if v is not None and (v.strides[2] == 1 or K == 1):
        return W, v
    if W.buf.data is not None:
        Wc = c.const(np.ascontiguousarray(W.to_numpy()), W.buf.name + "_rm")
    else:
        Wc = View.of(c.buffer("wrm", W.dtype, W.shape, "temp"), c)
        c.store(Generic(W.shape, W.dtype, c, W.at, 0), Wc)
    return Wc, Wc.try_reshape((group, M // group, K))


def _call(c, x, w, plan, group: int, out, direct: bool) -> ExternCall:
    """The template call storing into ``out``, a (Nb*G, Mg, P) view of the output."""
    X = c.force(x)
    C = X.shape[1]
    W, W3 = _weights(c, w, group)
    M = W.shape[0]
    Mg, Cg = M // group, C // group
    kernel = tuple(int(k) for k in W.shape[2:])
    P = out.shape[2]
    ks = int(np.prod(kernel))
    a = {"M": Mg, "N": P, "K": Cg * ks, "batch": out.shape[0], "groups": group, "cg": Cg,
         "a_off": W3.offset, "a_sg": W3.strides[0], "a_sm": W3.strides[1], "a_sk": 1,
         "w_sc": W.strides[1], "w_sp": tuple(W.strides[2:]),
         "x_off": X.offset, "x_sn": X.strides[0], "x_sc": X.strides[1], "x_sp": tuple(X.strides[2:]),
         "in": tuple(X.shape[2:]), "out": tuple(int(o) for o in plan.out), "kernel": kernel,
         "strides": tuple(plan.strides), "dilations": tuple(plan.dilations),
         "pads": tuple(plan.pads_begin),
         "c_off": out.offset, "c_sb": out.strides[0], "c_sm": out.strides[1], "c_sn": out.strides[2]}
    return ExternCall("cuda_conv_direct" if direct else "cuda_conv", [X.buf, W.buf, out.buf], a)


# ---- configuration and launch -------------------------------------------------------------------
def _blocks(a: dict, cfg: GemmConfig) -> int:
    return -(-a["N"] // cfg.bn) * -(-a["M"] // cfg.bm) * a["batch"]


def choose(a: dict) -> GemmConfig:
    """The largest tile that still fills the GPU; the one with most blocks when none does."""
    if a["M"] <= SMALL.bm:
        return SMALL
    for cfg in (LARGE, MID):
        if a["M"] >= cfg.bm and a["N"] >= cfg.bn and _blocks(a, cfg) >= TARGET_BLOCKS:
            return cfg
    return SMALL if _blocks(a, SMALL) > _blocks(a, MID) else MID


def launch_dims(a: dict, cfg: GemmConfig | None) -> tuple:
    if cfg is None:   # direct: grid-stride over every output
        from .printer import BLOCK, MAX_GRID
        E = a["batch"] * a["M"] * a["N"]
        return (min(-(-E // BLOCK), MAX_GRID), 1, 1), (BLOCK, 1, 1)
    return (-(-a["N"] // cfg.bn), -(-a["M"] // cfg.bm), a["batch"]), (THREADS, 1, 1)


def flops_bytes(a: dict) -> tuple[int, int]:
    Nb = a["batch"] // a["groups"]
    C = a["cg"] * a["groups"]
    x = Nb * C * int(np.prod(a["in"]))
    w = a["M"] * a["groups"] * a["K"]
    y = a["batch"] * a["M"] * a["N"]
    return 2 * a["batch"] * a["M"] * a["N"] * a["K"], 4 * (x + w + y)


def index_extent(a: dict) -> int:
    """A bound on the index arithmetic beyond the buffers' own sizes (for the 32-bit choice)."""
    return max(a["batch"] * a["M"] * a["N"], a["K"] * max(a["N"], 1))


# ---- source ------------------------------------------------------------------------------------
def _window_terms(a: dict) -> tuple[list, list]:
    """Per spatial dim: (origin expression pieces, bound checks needed (lo, hi))."""
    checks = []
    for o, s, d, k, p, sz in zip(a["out"], a["strides"], a["dilations"], a["kernel"], a["pads"], a["in"]):
        lo = p > 0
        hi = (o - 1) * s - p + (k - 1) * d >= sz
        checks.append((lo, hi))
    return checks


def _decompose(q: str, sizes, names, ind: str) -> list[str]:
    """``const ix name_d = ...`` for the row-major coordinates of ``q`` over ``sizes``."""
    out, inner = [], 1
    for i in range(len(sizes) - 1, -1, -1):
        e = q if inner == 1 else f"({q} / {inner})"
        if i > 0:
            e = f"({e} % {sizes[i]})"
        out.append(f"{ind}const ix {names[i]} = {e};")
        inner *= sizes[i]
    return out[::-1]


def _gather(a: dict, Xn: str, ind: str, taps_of: str) -> tuple[list[str], str, str]:
    """Lines computing the input element of kernel row ``taps_of`` for origins ``irg_i<d>``:
    (lines, validity condition or "", address expression)."""
    nsp = len(a["kernel"])
    ks = a["kernel"]
    L = []
    ksz = int(np.prod(ks))
    if ksz == 1:
        L.append(f"{ind}const ix irg_ci = {taps_of};")
        taps = ["0"] * nsp
    else:
        L.append(f"{ind}const ix irg_ci = {taps_of} / {ksz}, irg_rr = {taps_of} % {ksz};")
        names = [f"irg_k{d}" for d in range(nsp)]
        L += _decompose("irg_rr", ks, names, ind)
        taps = names
    conds, addr = [], [f"irg_xb + irg_ci * {a['x_sc']}"]
    for d, ((lo, hi), dl, sz, xs) in enumerate(zip(_window_terms(a), a["dilations"], a["in"], a["x_sp"])):
        t = taps[d]
        pos = f"irg_i{d}" if t == "0" else (f"irg_i{d} + {t}" if dl == 1 else f"irg_i{d} + {t} * {dl}")
        L.append(f"{ind}const ix irg_h{d} = {pos};")
        if lo:
            conds.append(f"irg_h{d} >= 0")
        if hi:
            conds.append(f"irg_h{d} < {sz}")
        addr.append(f"irg_h{d} * {xs}")
    return L, " && ".join(conds), " + ".join(addr)


def _origins(a: dict, n: str, ind: str) -> list[str]:
    """Window origin ``irg_i<d>`` of output column ``n`` (flat over the output spatial dims)."""
    nsp = len(a["out"])
    names = [f"irg_o{d}" for d in range(nsp)]
    L = _decompose(n, a["out"], names, ind)
    for d, (s, p) in enumerate(zip(a["strides"], a["pads"])):
        e = names[d] if s == 1 else f"{names[d]} * {s}"
        L.append(f"{ind}const ix irg_i{d} = {e}{f' - {p}' if p else ''};")
    return L


def _bases(a: dict, ind: str) -> list[str]:
    G = a["groups"]
    g = ["const ix irg_g = 0, irg_nb = irg_t;"] if G == 1 else [f"const ix irg_g = irg_t % {G}, irg_nb = irg_t / {G};"]
    return [ind + g[0],
            f"{ind}const ix irg_ab = {a['a_off']} + irg_g * {a['a_sg']};",
            f"{ind}const ix irg_xb = {a['x_off']} + irg_nb * {a['x_sn']} + irg_g * {a['cg'] * a['x_sc']};"]


def conv_source(fn: str, params: str, a: dict, cfg: GemmConfig, ix: str, epilogue: list[str],
                names: tuple[str, str, str]) -> list[str]:
    """The implicit-GEMM ``__global__`` function (A = weights, B = gathered im2col slice)."""
    Xn, Wn, _ = names
    assert THREADS % cfg.bn == 0 and (cfg.bk * cfg.bn) % THREADS == 0
    head = ["  const ix irg_t = blockIdx.z;"] + _bases(a, "  ")
    setup = [f"  const int irg_nn = irg_tid % {cfg.bn};",
             "  const ix irg_nl = irg_n0 + irg_nn;",
             f"  const bool irg_nok = irg_nl < {a['N']};"]
    setup += _origins(a, "irg_nl", "  ")
    a_tile = a_tile_lines(cfg, True, a["M"], a["K"], Wn, "irg_ab", a["a_sm"], 1)
    g_lines, cond, addr = _gather(a, Xn, "        ", "irg_k")
    ok = f"irg_nok && irg_k < {a['K']}"
    b_tile = ["#pragma unroll",
              f"    for (int irg_r = 0; irg_r < {cfg.bk * cfg.bn // THREADS}; ++irg_r) {{",
              f"      const int kk = irg_tid / {cfg.bn} + irg_r * {THREADS // cfg.bn};",
              "      const ix irg_k = irg_k0 + kk;",
              "      float irg_x = 0.0f;",
              f"      if ({ok}) {{"]
    b_tile += g_lines
    load = f"irg_x = {Xn}[{addr}];"
    b_tile += [f"        if ({cond}) {load}" if cond else f"        {load}",
               "      }",
               "      irg_Bs[kk][irg_nn] = irg_x;",
               "    }"]
    return tiled_source(fn, params, cfg, ix, a["M"], a["N"], a["K"], head, a_tile, b_tile, epilogue,
                        pad_a=1, pad_b=0, setup=setup)


def direct_source(fn: str, params: str, a: dict, ix: str, epilogue: list[str],
                  names: tuple[str, str, str]) -> list[str]:
    """One output per thread (grid-stride): the window of ``Cg`` channels, taps unrolled."""
    from .printer import BLOCK
    Xn, Wn, _ = names
    M, N, E = a["M"], a["N"], a["batch"] * a["M"] * a["N"]
    nsp = len(a["kernel"])
    L = [f'extern "C" __global__ void __launch_bounds__({BLOCK}) {fn}({params}) {{',
         f"  typedef {ix} ix;",
         "#pragma unroll 1",
         f"  for (ix irg_q = (ix)blockIdx.x * {BLOCK} + threadIdx.x; irg_q < {E}; irg_q += (ix)gridDim.x * {BLOCK}) {{",
         f"    const ix irg_n = irg_q % {N}, irg_m = (irg_q / {N}) % {M}, irg_t = irg_q / {M * N};"]
    L += _bases(a, "    ")
    L += _origins(a, "irg_n", "    ")
    L += [f"    const ix irg_wb = irg_ab + irg_m * {a['a_sm']};",
          "    float irg_acc = 0.0f;",
          f"    for (ix irg_ci = 0; irg_ci < {a['cg']}; ++irg_ci) {{"]
    ind = "      "
    checks = _window_terms(a)
    waddr = [f"irg_wb + irg_ci * {a['w_sc']}"]
    xaddr = [f"irg_xb + irg_ci * {a['x_sc']}"]
    closes = []
    for d in range(nsp):
        k, dl = a["kernel"][d], a["dilations"][d]
        L += [f"{ind}#pragma unroll", f"{ind}for (int irg_k{d} = 0; irg_k{d} < {k}; ++irg_k{d}) {{"]
        closes.append(ind + "}")
        ind += "  "
        pos = f"irg_i{d} + irg_k{d}" if dl == 1 else f"irg_i{d} + irg_k{d} * {dl}"
        L.append(f"{ind}const ix irg_h{d} = {pos};")
        lo, hi = checks[d]
        conds = ([f"irg_h{d} >= 0"] if lo else []) + ([f"irg_h{d} < {a['in'][d]}"] if hi else [])
        if conds:
            L.append(f"{ind}if ({' && '.join(conds)}) {{")
            closes.append(ind + "}")
            ind += "  "
        waddr.append(f"irg_k{d} * {a['w_sp'][d]}")
        xaddr.append(f"irg_h{d} * {a['x_sp'][d]}")
    L.append(f"{ind}irg_acc = fmaf({Xn}[{' + '.join(xaddr)}], {Wn}[{' + '.join(waddr)}], irg_acc);")
    for cl in reversed(closes):
        L.append(cl)
    L += ["    }", "    {", "      const float irg_v = irg_acc;"]
    L += ["      " + line for line in epilogue]
    L += ["    }", "  }", "}"]
    return L


__all__ = ["CONFIGS", "DIRECT_MAX_MG", "MID", "choose", "conv_source", "direct_source", "flops_bytes",
           "launch_dims", "lower_conv"]
