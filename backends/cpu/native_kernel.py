"""The Python side every hand-written CPU kernel generator shares: the emit / ir / compile protocol,
one variant per model module, and 64-byte aligned numpy arrays for operands packed at compile time.

A generator (``GemmKernel``, ``QGemmKernel``, ``SparseGemmKernel``, ``DirectConv``,
``DirectConvOC``, ``MaxPool2d``) is a dataclass with a ``name`` (its external symbol), a ``tag``
(everything the generated code depends on) and ``emit(module)``; ``NativeKernel`` gives it
``ir()`` and ``compile()``, and its ``build()`` wraps the compiled library for numpy.
"""
from __future__ import annotations

from typing import Callable, ClassVar

import llvmlite.ir as ir
import numpy as np


class NativeKernel:
    """Mixin for the kernel generators; subclasses define ``name``, ``tag`` and ``emit``."""

    cache_prefix: ClassVar[str] = ""     # namespace of the kernel's objects in the object cache

    def emit(self, mod: ir.Module) -> ir.Function:
        """Add the entry function ``self.name`` (and its internal helpers) to ``mod``."""
        raise NotImplementedError

    def ir(self) -> str:
        """The LLVM IR of a module holding only this kernel."""
        mod = ir.Module(name=self.name)
        self.emit(mod)
        return str(mod)

    def compile(self, cache=True, target: tuple[str, str] | None = None):
        """Machine code for ``ir()`` (an ``llvm_target.Library``), through the object cache unless
        ``cache`` is False. ``target``: (LLVM CPU name, feature string) compiles for another CPU
        than the host, e.g. ``("haswell", "")`` for an AVX2-only machine; bypasses the cache.
        Emitting a parallel kernel registers the thread pool (``threads.launch``), so the code
        links."""
        from . import cache as object_cache
        text = self.ir()
        if target is not None:
            return object_cache.jit(text, *target)
        return object_cache.compile_cached(text, options=self.cache_prefix + self.tag, cache=cache)


def module_variant(mg, table: str, key, make: Callable[[], tuple]) -> ir.Function:
    """The function of one kernel variant in a model's module (``codegen.ModuleGen``), emitted on
    first use: ``make()`` returns (kernel, base name) and the kernel gets a name unique there.
    ``table`` names the per-module dict of variants, ``key`` the variant."""
    variants = mg.__dict__.setdefault(table, {})
    if key not in variants:
        k, name = make()
        k.name = mg.unique(name)
        variants[key] = k.emit(mg.module)
        mg.uses_threads = mg.uses_threads or k.parallel
    return variants[key]


def aligned_zeros(n: int, dtype, align: int = 64) -> np.ndarray:
    """``n`` zeros of ``dtype`` starting at a multiple of ``align`` bytes."""
    item = np.dtype(dtype).itemsize
    raw = np.zeros(n + align // item, dtype)
    off = (-raw.ctypes.data % align) // item
    return raw[off:off + n]


def round_up_to(x: int, m: int) -> int:
    """``x`` rounded up to a multiple of ``m``."""
    return -(-x // m) * m
