"""Run generated CUDA C on the CPU: one g++ build per translation unit, kernels called through ctypes.

    mod = build(source_text, kernels)          # kernels: {fn name: [C parameter types]}
    mod.launch("k_0", grid, block, [ptr, ...], order="reverse")

The translation unit is the emulator header (``cuemu_header.py``), the generated source, and
one exported trampoline per kernel taking the grid, block, schedule and an array of buffer
pointers. Builds are cached on disk (``$IRGRAPH_CACHE_DIR/cuda/emu/<sha256>.so``, the key
covering the header, the source, the flags and the compiler's version), written atomically.

Schedules: ``forward`` (blocks and threads in index order), ``reverse`` and ``shuffled``
(a seeded random order, reshuffled at every barrier). ``sanitize=True`` builds with
AddressSanitizer; such a library can only be loaded by a process started with libasan
preloaded (``asan_env()`` gives the environment), so tests run it in a subprocess.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from irgraph.errors import CompileError, ExecutionError

from .cuemu_header import CUEMU_H
from .prelude import PRELUDE

ORDERS = {"forward": 0, "reverse": 1, "shuffled": 2}
_lock = threading.Lock()
_loaded: dict = {}


def cache_root() -> Path:
    env = os.environ.get("IRGRAPH_CACHE_DIR")
    root = Path(env) if env else Path.home() / ".cache" / "irgraph"
    return root / "cuda"


@functools.lru_cache(maxsize=None)
def compiler_version(cxx: str = "g++") -> str:
    exe = shutil.which(cxx)
    if exe is None:
        raise CompileError("the CUDA emulator needs a C++ compiler (g++) on PATH",
                           hint="install g++ (e.g. apt-get install g++)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0] if out.stdout else exe


def sanitizer_runtime() -> str | None:
    """Path of libasan for LD_PRELOAD, or None when g++ has none."""
    try:
        p = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
    return p if p and os.path.isabs(p) and os.path.exists(p) else None


def asan_env(base: dict | None = None) -> dict:
    """Environment for a child process that loads sanitized emulator builds."""
    env = dict(os.environ if base is None else base)
    lib = sanitizer_runtime()
    if lib is None:
        raise CompileError("AddressSanitizer runtime (libasan) not found for g++")
    env["LD_PRELOAD"] = lib
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1:halt_on_error=1"
    env["IRGRAPH_CUDA_EMU_SANITIZE"] = "1"
    return env


def sanitize_default() -> bool:
    return os.environ.get("IRGRAPH_CUDA_EMU_SANITIZE") == "1"


def _trampolines(kernels: dict) -> str:
    lines = ['extern "C" void* irg_emu_alloc(size_t n) { return malloc(n ? n : 1); }',
             'extern "C" void irg_emu_free(void* p) { free(p); }',
             'extern "C" const char* irg_emu_error() { return cuemu::st.error.c_str(); }']
    for name, types in kernels.items():
        call = ", ".join(f"({t})a[{i}]" for i, t in enumerate(types))
        lines.append(f'static void irg_call_{name}(void** a) {{ {name}({call}); }}')
        lines.append(f'extern "C" int irg_emu_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, '
                     f'unsigned by, unsigned bz, int order, unsigned seed, void** a) {{ return cuemu::launch_args('
                     f'dim3(gx, gy, gz), dim3(bx, by, bz), 0, order, seed, irg_call_{name}, a); }}')
    return "\n".join(lines) + "\n"


def translation_unit(source: str, kernels: dict) -> str:
    return '#include "cuemu.h"\n' + PRELUDE + "\n" + source + "\n" + _trampolines(kernels)


def flags(sanitize: bool, opt: str = "-O2") -> list[str]:
    f = ["-std=c++17", opt, "-fPIC", "-shared", "-Wno-unknown-pragmas", "-Wno-unused-variable",
         "-DCUEMU_NO_CUDA_HEADERS", "-ffp-contract=off"]
    if sanitize:
        f += ["-fsanitize=address", "-fno-omit-frame-pointer", "-g", "-O1"]
    return f


def build(source: str, kernels: dict, sanitize: bool | None = None, opt: str = "-O2") -> "EmuModule":
    """The emulator library for ``source`` (generated CUDA C, without the prelude);
    ``kernels``: {function name: [C types of its parameters]}. ``opt``: g++'s optimization
    flag (``-O0`` builds a library of thousands of test kernels ~5x faster than ``-O2``;
    the arithmetic is the same IEEE arithmetic at every level, contraction being off)."""
    sanitize = sanitize_default() if sanitize is None else bool(sanitize)
    if opt not in ("-O0", "-O1", "-O2", "-O3"):
        raise CompileError(f"unknown optimization flag {opt!r}", expected="-O0 .. -O3")
    tu = translation_unit(source, kernels)
    fl = flags(sanitize, opt)
    h = hashlib.sha256()
    for part in (CUEMU_H, tu, " ".join(fl), compiler_version()):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()
    root = cache_root() / "emu"
    so = root / f"{key}.so"
    with _lock:
        mod = _loaded.get(str(so))
        if mod is not None:
            return mod
    if not so.exists():
        _compile(tu, fl, root, so)    # outside the lock: shards build concurrently (atomic rename)
    with _lock:
        mod = _loaded.get(str(so))
        if mod is not None:
            return mod
        try:
            lib = ctypes.CDLL(str(so))
        except OSError as e:
            if sanitize:
                raise ExecutionError("a sanitized emulator build can only be loaded with libasan "
                                     "preloaded (see irgraph.backends.cuda.emulator.asan_env)") from e
            raise
        mod = EmuModule(lib, kernels, str(so))
        _loaded[str(so)] = mod
        return mod


def _compile(tu: str, fl: list, root: Path, so: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as d:
        Path(d, "cuemu.h").write_text(CUEMU_H)
        cpp = Path(d, "tu.cpp")
        cpp.write_text(tu)
        out = Path(d, "lib.so")
        r = subprocess.run(["g++", *fl, "-I", d, str(cpp), "-o", str(out)], capture_output=True, text=True)
        if r.returncode != 0:
            raise CompileError("g++ failed to build the CUDA emulator library:\n" + r.stderr[-4000:])
        os.replace(out, so)


class EmuModule:
    def __init__(self, lib, kernels: dict, path: str):
        self.lib = lib
        self.path = path
        self.kernels = dict(kernels)
        lib.irg_emu_alloc.restype = ctypes.c_void_p
        lib.irg_emu_alloc.argtypes = [ctypes.c_size_t]
        lib.irg_emu_free.argtypes = [ctypes.c_void_p]
        lib.irg_emu_error.restype = ctypes.c_char_p
        self._fns: dict = {}

    def fn(self, name: str):
        f = self._fns.get(name)
        if f is None:
            f = getattr(self.lib, "irg_emu_" + name)
            f.restype = ctypes.c_int
            f.argtypes = [ctypes.c_uint] * 6 + [ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
            self._fns[name] = f
        return f

    def alloc(self, nbytes: int) -> int:
        return self.lib.irg_emu_alloc(nbytes)

    def free(self, ptr: int) -> None:
        self.lib.irg_emu_free(ptr)

    def launch(self, name: str, grid, block, ptrs, order: str = "forward", seed: int = 0) -> None:
        if order not in ORDERS:
            raise ExecutionError(f"unknown emulator schedule {order!r}", expected=", ".join(ORDERS), actual=order)
        argv = (ctypes.c_void_p * max(1, len(ptrs)))(*ptrs)
        g = (tuple(grid) + (1, 1))[:3]
        b = (tuple(block) + (1, 1))[:3]
        rc = self.fn(name)(*g, *b, ORDERS[order], seed & 0xFFFFFFFF, argv)
        if rc != 0:
            raise ExecutionError(f"CUDA emulator: kernel {name}: {self.lib.irg_emu_error().decode()}")
