"""Kernel IR -> CUDA C: one ``extern "C" __global__`` function per stage (``stages.py``).

    src = KernelSource(kernel, prefix="m0_")
    src.lines        # CUDA C text of the kernel's functions
    src.launches     # Launch(fn, grid, block, buffers, kind, flops, bytes) per stage, in order

Each function takes the kernel buffers it touches as pointers (``const`` for inputs and
constants, ``__restrict__`` unless the kernel updates a buffer in place); every size and stride
is a literal. Scalars are printed by ``scalar_cuda.CudaScalar``; a subexpression a statement
uses twice is computed once into a ``const`` local. The index type ``ix`` is ``int`` when
every buffer and loop of the function fits 32 bits, else ``long long``.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from irgraph import dtype as dt

from ..kernel_ir import (INDEX, Assign, Buffer, Const, ExternCall, If, Kernel, Load, Local, Loop,
                         LoweringError, Op, Store, Var, stmt_exprs, walk_expr, walk_stmts)
from . import conv as conv_t
from . import gemm as gemm_t
from .scalar_cuda import C, CudaScalar, check, const_text, load_text, mem_type, reg_type, store_value
from .stages import Stage, loads_of, plan_stages

BLOCK = 256
MAX_GRID = 4096          # grid-stride loops cover larger iteration spaces
WARPS_PER_BLOCK = BLOCK // 32
BLOCK_ROW_MIN = 1024     # reduced elements per row from which a whole block (not a warp) folds a row
INNER_UNROLL_FULL = 8    # innermost serial loops up to this extent may unroll fully (nvcc decides)
INNER_UNROLL = 4         # longer ones unroll by this factor
_IX_OPS = ("add", "sub", "mul", "idx_div", "idx_mod", "min", "max", "neg", "select")
_IDENT = {"add": 0, "mul": 1}


@dataclass
class Launch:
    fn: str
    grid: tuple
    block: tuple
    buffers: list                 # Buffers passed, in parameter order
    kind: str                     # map | reduce | serial | gemm (+epilogue)
    flops: int = 0
    bytes: int = 0
    config: str = ""


def c_name(buf: Buffer) -> str:
    return "b_" + re.sub(r"[^A-Za-z0-9_]", "_", buf.name)


@dataclass
class KernelSource:
    kernel: Kernel
    prefix: str = ""
    lines: list = field(default_factory=list)
    launches: list = field(default_factory=list)
    functions: dict = field(default_factory=dict)   # fn name -> its text
    var_names: dict = field(default_factory=dict)   # fn name -> kernel-IR variable names in it

    def __post_init__(self):
        for b in self.kernel.buffers:
            check(b.dtype)
        self.stages = plan_stages(self.kernel.body)
        base = re.sub(r"[^A-Za-z0-9_]", "_", self.prefix + self.kernel.name)
        for i, st in enumerate(self.stages):
            start = len(self.lines)
            fp = _FnPrinter(self, st, f"{base}_{i}")
            fp.emit()
            self.functions[fp.name] = "\n".join(self.lines[start:])
            self.var_names[fp.name] = sorted(stage_var_names(st))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def stage_var_names(st: Stage) -> set:
    """Every kernel-IR variable name a stage's function may print (loop indices, locals)."""
    names = {v.name for v in st.pvars} | {lp.var.name for lp in st.rest + st.rloops}
    stmts = list(st.stmts) + list(st.tail) + list(st.rest[:1]) + list(st.rloops[:1])
    if st.acc is not None:
        names.add(st.acc.name)
    exprs = [e for e in (st.value, st.init) if e is not None]
    if st.epilogue is not None:
        names |= stage_var_names(st.epilogue)
    for s in walk_stmts(stmts):
        if isinstance(s, (Loop, Local, Assign)):
            names.add(s.var.name)
        exprs.extend(stmt_exprs(s))
    for e in exprs:
        for x in walk_expr(e):
            if isinstance(x, Var):
                names.add(x.name)
    return names


def use_counts(exprs, known) -> dict[int, int]:
    """Uses of each expression node (by id) in ``exprs``: one per expression it roots and one per
    argument slot of each distinct node that reads it. Nodes whose id is in ``known`` (already
    bound to a name) are not entered. A node used more than once is worth binding to a local."""
    seen = set(known)
    counts: dict[int, int] = {}
    for e in exprs:
        counts[id(e)] = counts.get(id(e), 0) + 1
        for x in walk_expr(e, seen):
            for a in (x.args if isinstance(x, Op) else (x.index,) if isinstance(x, Load) else ()):
                counts[id(a)] = counts.get(id(a), 0) + 1
    return counts


class _FnPrinter:
    def __init__(self, src: KernelSource, st: Stage, name: str):
        self.src = src
        self.k = src.kernel
        self.st = st
        self.name = name
        self.lines: list[str] = []
        self.tmp = itertools.count()
        self.loopvars: set = set()
        self.sc = CudaScalar("ix")

    # ---- entry ----------------------------------------------------------------------------------
    def emit(self) -> None:
        st = self.st
        bufs = self._buffers()
        ix = "int" if self._fits32(bufs) else "long long"
        params = self._params(bufs)
        if st.kind == "gemm":
            self._gemm(params, ix, bufs)
            return
        if st.kind == "map":
            self._map(params, ix, bufs)
        elif st.kind == "reduce":
            self._reduce(params, ix, bufs)
        else:
            self._serial(params, ix, bufs)
        self.src.lines.extend(self.lines + [""])

    def _stmts(self) -> list:
        st = self.st
        if st.kind == "gemm":
            return st.epilogue.stmts if st.epilogue else []
        if st.kind == "reduce":
            return st.rloops[:1] + st.tail + ([Local(st.acc, st.init)])
        if st.kind == "map":
            return st.rest[:1] if st.rest else st.stmts
        return st.stmts

    def _buffers(self) -> list:
        used = set()
        if self.st.kind == "gemm":
            used |= {id(b) for b in self.st.call.args}
        for s in walk_stmts(self._stmts()):
            if isinstance(s, Store):
                used.add(id(s.buf))
            for e in stmt_exprs(s):
                for x in walk_expr(e):
                    if isinstance(x, Load):
                        used.add(id(x.buf))
        return [b for b in self.k.buffers if id(b) in used]

    def _fits32(self, bufs) -> bool:
        lim = (1 << 31) - 1
        if any(b.size >= lim for b in bufs) or self.st.size >= lim:
            return False
        for s in walk_stmts(self._stmts()):
            if isinstance(s, Loop) and s.extent >= lim:
                return False
            for e in stmt_exprs(s):
                for x in walk_expr(e):
                    if isinstance(x, Const) and x.dtype is INDEX and abs(int(x.value)) >= (1 << 30):
                        return False
        if self.st.kind == "gemm":
            a = self.st.call.attrs
            if self.st.call.fn == "cuda_gemm":
                ext = (a["batch"] * max(abs(a["a_sb"]), abs(a["b_sb"]), abs(a["c_sb"]), 1)
                       + a["M"] * a["N"] * a["K"])
            else:
                ext = conv_t.index_extent(a)
            if ext >= lim:
                return False
        return True

    def _params(self, bufs) -> str:
        written = {id(s.buf) for s in walk_stmts(self._stmts()) if isinstance(s, Store)}
        if self.st.kind == "gemm":
            written.add(id(self.st.call.args[2]))
        restrict = "" if self.k.attrs.get("aliased") else " __restrict__"
        out = []
        for b in bufs:
            const = "const " if id(b) not in written else ""
            out.append(f"{const}{mem_type(b.dtype)}*{restrict} {c_name(b)}")
        return ", ".join(out)

    def _head(self, params: str, ix: str, threads: int) -> None:
        self.lines += [f'extern "C" __global__ void __launch_bounds__({threads}) {self.name}({params}) {{',
                       f"  typedef {ix} ix;"]

    def _launch(self, grid, block, bufs, kind, config="") -> None:
        flops, nbytes = self._cost(bufs)
        self.src.launches.append(Launch(self.name, tuple(grid), tuple(block), bufs, kind, flops, nbytes,
                                        config))

    # ---- schedules ------------------------------------------------------------------------------
    def _map(self, params, ix, bufs) -> None:
        st = self.st
        E = st.size
        self._head(params, ix, BLOCK)
        self.loopvars |= {v.name for v in st.pvars}
        # grid-stride loops run ~once per thread: unrolling them only bloats the code
        self.lines.append("#pragma unroll 1")
        self.lines.append(f"  for (ix irg_q = (ix)blockIdx.x * {BLOCK} + threadIdx.x; irg_q < {E}; "
                          f"irg_q += (ix)gridDim.x * {BLOCK}) {{")
        self._delinearize("irg_q", st.pvars, st.pext, "    ")
        body = st.stmts
        for lp in reversed(st.rest):   # serial loops kept inside, original order
            body = [Loop(lp.var, lp.extent, "serial", body)]
        self.body(body, 2)
        self.lines += ["  }", "}"]
        grid = min(-(-E // BLOCK), MAX_GRID)
        self._launch((grid, 1, 1), (BLOCK, 1, 1), bufs, "map")

    def _serial(self, params, ix, bufs) -> None:
        self._head(params, ix, 1)
        self.body(self.st.stmts, 1)
        self.lines.append("}")
        self._launch((1, 1, 1), (1, 1, 1), bufs, "serial")

    def _reduce(self, params, ix, bufs) -> None:
        st = self.st
        rows = st.size
        R = 1
        for lp in st.rloops:
            R *= lp.extent
        acc_t = reg_type(st.acc.dtype)
        shfl_t = "int" if st.acc.dtype.is_bool or st.acc.dtype.bits < 32 else acc_t
        self.loopvars |= {v.name for v in st.pvars} | {lp.var.name for lp in st.rloops}
        block_row = R >= BLOCK_ROW_MIN or rows == 1
        self._head(params, ix, BLOCK)
        ident = self._identity(st.combine, st.acc.dtype)
        comb = self._combine_text(st.combine, st.acc.dtype, "irg_a", "irg_b")
        self.lines.append(f"  auto irg_comb = [](const {acc_t} irg_a, const {acc_t} irg_b) -> {acc_t} "
                          f"{{ return {comb}; }};")
        self.lines.append("  const int irg_lane = threadIdx.x & 31, irg_warp = threadIdx.x >> 5;")
        if block_row:
            self.lines += [f"  __shared__ {acc_t} irg_red[{WARPS_PER_BLOCK}];", "#pragma unroll 1",
                           f"  for (ix irg_o = blockIdx.x; irg_o < {rows}; irg_o += gridDim.x) {{"]
            step, first = "blockDim.x", "threadIdx.x"
        else:
            self.lines.append("#pragma unroll 1")
            self.lines.append(f"  for (ix irg_o = (ix)blockIdx.x * {WARPS_PER_BLOCK} + irg_warp; irg_o < {rows}; "
                              f"irg_o += (ix)gridDim.x * {WARPS_PER_BLOCK}) {{")
            step, first = "32", "irg_lane"
        self._delinearize("irg_o", st.pvars, st.pext, "    ")
        init = self.expr_stmt([st.init], "    ")[0]
        self.lines.append(f"    {acc_t} {st.acc.name} = ({first} == 0) ? ({acc_t})({init}) : {ident};")
        self.lines.append(f"    for (ix irg_r = {first}; irg_r < {R}; irg_r += {step}) {{")
        self._delinearize("irg_r", [lp.var for lp in st.rloops], [lp.extent for lp in st.rloops], "      ")
        v = self.expr_stmt([st.value], "      ")[0]
        self.lines += [f"      {st.acc.name} = irg_comb({st.acc.name}, {v});", "    }"]
        self._warp_fold(st.acc.name, acc_t, shfl_t, "    ")
        if block_row:
            self.lines += [f"    if (irg_lane == 0) irg_red[irg_warp] = {st.acc.name};",
                           "    __syncthreads();",
                           "    if (irg_warp == 0) {",
                           f"      {st.acc.name} = irg_lane < {WARPS_PER_BLOCK} ? irg_red[irg_lane] : {ident};"]
            self._warp_fold(st.acc.name, acc_t, shfl_t, "      ")
            self.lines.append("      if (irg_lane == 0) {")
            self.body(st.tail, 4)
            self.lines += ["      }", "    }", "    __syncthreads();", "  }", "}"]
            grid = min(rows, MAX_GRID)
        else:
            self.lines.append("    if (irg_lane == 0) {")
            self.body(st.tail, 3)
            self.lines += ["    }", "  }", "}"]
            grid = min(-(-rows // WARPS_PER_BLOCK), MAX_GRID)
        self._launch((grid, 1, 1), (BLOCK, 1, 1), bufs, "reduce")

    def _warp_fold(self, name, acc_t, shfl_t, ind) -> None:
        self.lines += [f"{ind}for (int irg_off = 16; irg_off > 0; irg_off >>= 1)",
                       f"{ind}  {name} = irg_comb({name}, ({acc_t})__shfl_xor_sync(0xffffffffu, "
                       f"({shfl_t}){name}, irg_off));"]

    def _identity(self, comb: str, d) -> str:
        if comb in _IDENT:
            return const_text(_IDENT[comb], d)
        if d.is_bool:
            return "true" if comb == "min" else "false"
        if d.is_float:
            return const_text(float("inf") if comb == "min" else float("-inf"), d)
        import numpy as np
        info = np.iinfo(d.np)
        return const_text(info.max if comb == "min" else info.min, d)

    def _combine_text(self, comb: str, d, a: str, b: str) -> str:
        return self.sc.op(comb, [C(a, d), C(b, d)], d).text

    def _gemm(self, params, ix, bufs) -> None:
        """A template stage: GEMM, implicit-GEMM convolution or direct convolution."""
        st = self.st
        a = st.call.attrs
        fn = st.call.fn
        names = tuple(c_name(b) for b in st.call.args)
        if st.epilogue is None:
            epi = gemm_t.default_epilogue(a, names[2])
        else:
            epi = self._gemm_epilogue(a)
        if fn == "cuda_gemm":
            cfg = gemm_t.choose(a["M"], a["N"], a["K"], a["batch"])
            lines = gemm_t.gemm_source(self.name, params, a, cfg, ix, epi, names)
            grid, block = gemm_t.launch_dims(a, cfg)
            kind, config = "gemm", cfg.name
        elif fn == "cuda_conv":
            cfg = conv_t.choose(a)
            lines = conv_t.conv_source(self.name, params, a, cfg, ix, epi, names)
            grid, block = conv_t.launch_dims(a, cfg)
            kind, config = "conv", cfg.name
        elif fn == "cuda_conv_direct":
            lines = conv_t.direct_source(self.name, params, a, ix, epi, names)
            grid, block = conv_t.launch_dims(a, None)
            kind, config = "conv", "direct"
        else:
            raise LoweringError(f"the CUDA backend has no template {fn!r}")
        self.src.lines.extend(lines + [""])
        self._launch(grid, block, bufs, kind + ("+epilogue" if st.epilogue else ""), config)

    def _gemm_epilogue(self, a) -> list:
        ep = self.st.epilogue
        saved = self.lines
        self.lines = []
        self.loopvars |= {v.name for v in ep.pvars}
        self.lines.append(f"const ix irg_q = {a['c_off'] - ep.attrs_base} + irg_t * {a['c_sb']} + irg_m * {a['c_sm']}"
                          f" + irg_n * {a['c_sn']};")
        self._delinearize("irg_q", ep.pvars, ep.pext, "")
        cbuf = self.st.call.args[2]
        acc_loads = {id(x) for x in loads_of(ep.stmts, cbuf)}
        self.body(ep.stmts, 0, preset={i: C("irg_v", dt.float32) for i in acc_loads})
        out, self.lines = self.lines, saved
        return out

    # ---- statements -----------------------------------------------------------------------------
    def _delinearize(self, q: str, pvars, pext, ind: str) -> None:
        used = self._used_names()
        inner = 1
        for v, d in reversed(list(zip(pvars, pext))):
            if v.name in used:
                e = q if inner == 1 else f"({q} / {inner})"
                # the outermost variable needs no modulo: q < product of extents
                e = e if v is pvars[0] else f"({e} % {d})"
                self.lines.append(f"{ind}const ix {v.name} = {e};")
            inner *= d

    def _used_names(self) -> set:
        st = self.st
        stmts = self._all_stmts()
        names = set()
        for s in walk_stmts(stmts):
            for e in stmt_exprs(s):
                for x in walk_expr(e):
                    if isinstance(x, Var):
                        names.add(x.name)
        if st.kind == "reduce":
            for e in (st.value, st.init):
                for x in walk_expr(e):
                    if isinstance(x, Var):
                        names.add(x.name)
        return names

    def _all_stmts(self) -> list:
        st = self.st
        if st.kind == "gemm":
            return st.epilogue.stmts if st.epilogue else []
        if st.kind == "reduce":
            return st.tail
        return st.rest[:1] + st.stmts if st.kind == "map" else st.stmts

    def body(self, stmts, depth: int, preset: dict | None = None) -> None:
        ind = "  " * depth
        for s in stmts:
            if isinstance(s, Loop):
                self.loopvars.add(s.var.name)
                # outer loops stay rolled and long innermost ones unroll 4x: nvcc's full
                # unrolling of a nest (a 3-d window, a scan step) or of a 12-step loop that
                # loads and stores bloats the code until ptxas spills
                nested = any(isinstance(x, Loop) for x in walk_stmts(s.body))
                unroll = ("#pragma unroll\n" if s.kind == "unroll" else
                          "#pragma unroll 1\n" if nested else
                          f"#pragma unroll {INNER_UNROLL}\n" if s.extent > INNER_UNROLL_FULL else "")
                unroll = unroll + ind if unroll else ""
                self.lines.append(f"{ind}{unroll}for (ix {s.var.name} = 0; {s.var.name} < {s.extent}; ++{s.var.name}) {{")
                self.body(s.body, depth + 1, preset)
                self.lines.append(f"{ind}}}")
            elif isinstance(s, Store):
                idx, val = self.expr_stmt([s.index, s.value], ind, preset)
                sv = store_value(C(val, s.value.dtype))
                self.lines.append(f"{ind}{c_name(s.buf)}[{idx}] = {sv};")
            elif isinstance(s, Local):
                (v,) = self.expr_stmt([s.init], ind, preset)
                self.lines.append(f"{ind}{reg_type(s.var.dtype)} {s.var.name} = {v};")
            elif isinstance(s, Assign):
                (v,) = self.expr_stmt([s.value], ind, preset)
                self.lines.append(f"{ind}{s.var.name} = {v};")
            elif isinstance(s, If):
                (c,) = self.expr_stmt([s.cond], ind, preset)
                self.lines.append(f"{ind}if ({c}) {{")
                self.body(s.then, depth + 1, preset)
                if s.orelse:
                    self.lines.append(f"{ind}}} else {{")
                    self.body(s.orelse, depth + 1, preset)
                self.lines.append(f"{ind}}}")
            elif isinstance(s, ExternCall):
                raise LoweringError(f"the CUDA backend has no template {s.fn!r} inside a loop")
            else:
                raise LoweringError(f"internal: unknown statement {type(s).__name__}")

    # ---- expressions ----------------------------------------------------------------------------
    def expr_stmt(self, exprs, ind: str, preset: dict | None = None) -> list[str]:
        """C text of ``exprs``; subexpressions they share are first bound to const locals."""
        vals: dict = dict(preset or {})
        counts = use_counts(exprs, vals)
        out = []
        for e in exprs:
            out.append(self._expr(e, vals, counts, ind).text)
        return out

    def _expr(self, e, vals, counts, ind) -> C:
        for x in walk_expr(e, set(k for k in vals)):
            if id(x) in vals:
                continue
            c = self._node(x, vals)
            if counts.get(id(x), 0) > 1 and not isinstance(x, (Const, Var)):
                n = f"t{next(self.tmp)}"
                ct = self.sc.ctype(c)
                self.lines.append(f"{ind}const {ct} {n} = {c.text};")
                c = C(n, c.dtype, c.ix)
            vals[id(x)] = c
        return vals[id(e)]

    def _node(self, x, vals) -> C:
        if isinstance(x, Const):
            ix = x.dtype is INDEX
            return C(const_text(x.value, x.dtype, ix), x.dtype, ix)
        if isinstance(x, Var):
            return C(x.name, x.dtype, x.name in self.loopvars)
        if isinstance(x, Load):
            idx = vals[id(x.index)]
            return C(load_text(c_name(x.buf), idx.text, x.dtype), x.dtype)
        if isinstance(x, Op):
            args = [vals[id(a)] for a in x.args]
            pure = (x.dtype is INDEX and x.op in _IX_OPS
                    and all(a.ix for a, y in zip(args, x.args) if y.dtype is INDEX)
                    and (x.op != "select" or (args[1].ix and args[2].ix)))
            return self.sc.op(x.op, args, x.dtype, x.to, ix=pure)
        raise LoweringError(f"internal: unknown expression {type(x).__name__}")

    # ---- figures --------------------------------------------------------------------------------
    def _cost(self, bufs) -> tuple[int, int]:
        """(flops, bytes) estimate: template arithmetic, or ops per element x iterations, and the
        bytes of the buffers the stage reads and writes once each."""
        st = self.st
        nbytes = sum(b.nbytes for b in bufs)
        if st.kind == "gemm":
            cost = gemm_t.flops_bytes if st.call.fn == "cuda_gemm" else conv_t.flops_bytes
            return cost(st.call.attrs)
        iters = st.size
        for lp in st.rest + st.rloops:
            iters *= lp.extent
        ops = 0
        for s in walk_stmts(self._all_stmts() + ([Assign(st.acc, st.value)] if st.kind == "reduce" else [])):
            for e in stmt_exprs(s):
                for x in walk_expr(e):
                    if isinstance(x, Op) and x.dtype.is_float:
                        ops += 1
        return ops * max(iters, 1), nbytes
