"""The int8 templates in the CPU code generator: an ``ExternCall("qgemm")`` of the kernel IR (made
by ``backends/lower_quant.py``) becomes a call of an int8 GEMM variant (``gemm_int8.QGemmKernel``),
emitted into the model's module once per (output type, activation, A signedness); ``qpack``,
``qunpack``, ``qadd``, ``qmaxpool``, ``qdql`` and ``qquant`` call the byte kernels of ``qlayout.py``.

``install()`` registers these ExternCalls with the code generator (``codegen.register_extern``).
"""
from __future__ import annotations

import llvmlite.ir as ir

from . import codegen
from .gemm_int8 import QGemmConfig, QGemmKernel
from .native_kernel import module_variant
from .vector_ir import i64

# ExternCall("qgemm") argument order (buffers, each with an element offset in attrs["offsets"])
ARGS = ("A", "rowoff", "tapoff", "Bp", "C", "colsum", "xzp", "xscale", "mult", "ibias", "fbias", "params")


def kernel_for(mg, out: str, activation: str, a_signed: bool) -> ir.Function:
    """The module's int8 GEMM variant, emitted on first use."""
    def make():
        k = QGemmKernel(QGemmConfig.for_host(), out=out, activation=activation, a_signed=a_signed,
                        parallel=mg.num_threads > 1)
        return k, f"irg_qgemm_{out}_{activation}_{int(a_signed)}"
    return module_variant(mg, "_qgemms", (out, activation, bool(a_signed)), make)


def emit_call(gen, s) -> None:
    a = s.attrs
    fn = kernel_for(gen.mg, a["out"], a["activation"], a["a_signed"])
    b = gen.b
    p = dict(zip(ARGS, (codegen.extern_ptr(gen, x, o) for x, o in zip(s.args, a["offsets"]))))
    lda, T, KG, ldc, M, N = (i64(v) for v in (a["lda"], a["T"], a["KG"], a["ldc"], a["M"], a["N"]))
    b.call(fn, [p["A"], lda, p["rowoff"], p["tapoff"], T, KG, p["Bp"], p["C"], ldc, M, N, p["colsum"],
                p["xzp"], p["xscale"], p["mult"], p["ibias"], p["fbias"], p["params"],
                i64(gen.mg.num_threads)])


def emit_layout_call(gen, s) -> None:
    """``qpack`` / ``qunpack`` / ``qadd`` (backends/cpu/qlayout.py)."""
    from . import qlayout
    a = s.attrs
    b = gen.b
    ptrs = [codegen.extern_ptr(gen, x, o) for x, o in zip(s.args, a["offsets"])]
    ints = [i64(v) for v in a["ints"]]
    nth = i64(gen.mg.num_threads)
    mod = gen.mg.module
    if gen.mg.num_threads > 1:
        gen.mg.uses_threads = True
    if s.fn == "qpack":
        fn = qlayout.kernel(mod, "pack", flip=a["flip"])
        x, img, zp = ptrs
        b.call(fn, [x, img] + ints + [zp, nth])
    elif s.fn == "qdql":
        fn = qlayout.kernel(mod, "dql")
        b.call(fn, ptrs + ints + [nth])
    elif s.fn == "qquant":
        fn = qlayout.kernel(mod, "quant", signed=a["signed"])
        b.call(fn, ptrs + ints + [nth])
    elif s.fn == "qmaxpool":
        fn = qlayout.kernel(mod, "maxpool", signed=a["signed"], sw=a["sw"])
        b.call(fn, ptrs + ints + [nth])
    elif s.fn == "qunpack":
        fn = qlayout.kernel(mod, "unpack", esize=a["esize"])
        b.call(fn, ptrs + ints + [nth])
    else:
        fn = qlayout.kernel(mod, "add", a_signed=a["a_signed"], b_signed=a["b_signed"], y_signed=a["y_signed"],
                            relu=a["relu"])
        A, B, Y, params = ptrs
        b.call(fn, [A, B, Y] + ints + [params, nth])


def install() -> None:
    """Route the int8 ExternCalls of the CPU code generator here (idempotent)."""
    codegen.register_extern("qgemm", emit_call)
    codegen.register_extern(("qpack", "qunpack", "qadd", "qmaxpool", "qdql", "qquant"), emit_layout_call)
