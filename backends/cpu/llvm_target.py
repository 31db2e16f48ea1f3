"""LLVM for the host CPU through llvmlite: target machine, O3 pipeline, JIT, object code.

What every CPU kernel module goes through:

    tm = host_target()                       # CPU name + all its features (AVX2/AVX-512/VNNI …)
    lib = jit(ir_text)                       # parse, verify, O3 (vectorizers on), MCJIT
    fn = lib.cfunc("kernel", None, ctypes.c_void_p, ...)
    obj = emit_object(ir_text)               # relocatable ELF bytes, for the on-disk cache
    lib2 = load_object(obj)                  # another process: ~3 ms, no optimizer or codegen

Pitfalls this module handles (measured on llvmlite 0.50 / LLVM 22):
- ``llvm.initialize()`` raises: only the native target and asm printer are initialized;
- the loop and SLP vectorizers are off by default in PipelineTuningOptions: switched on;
- the CPU tuning ``prefer-256-bit`` makes auto-vectorized loops use ymm on AVX-512 machines:
  removed from the feature string so they use zmm;
- JIT-ed code that calls the thread pool needs it registered first (``threads.ensure_pool``).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import threading
import time
from dataclasses import dataclass, field

import llvmlite
import llvmlite.binding as llvm

from irgraph.errors import CompileError

_init_lock = threading.Lock()
_initialized = False


def _init() -> None:
    global _initialized
    with _init_lock:
        if not _initialized:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _initialized = True


@dataclass(frozen=True)
class HostCPU:
    name: str
    features: str              # LLVM feature string (+avx2,+fma,…,-prefer-256-bit)
    vector_bits: int           # widest float SIMD register: 512, 256 or 128
    has_fma: bool
    has_vnni: bool             # avx512vnni (vpdpbusd on zmm)
    has_avxvnni: bool          # AVX-VNNI (vpdpbusd on ymm)

    @property
    def f32_lanes(self) -> int:
        return self.vector_bits // 32

    def key(self) -> str:
        """What object code depends on: CPU name, features, LLVM version."""
        return f"{self.name}|{self.features}|llvmlite {llvmlite.__version__}|llvm {llvm.llvm_version_info}"


@functools.lru_cache(maxsize=None)
def host_cpu() -> HostCPU:
    _init()
    feats = llvm.get_host_cpu_features()
    has = {k for k, v in feats.items() if v}
    bits = 512 if "avx512f" in has else 256 if "avx2" in has or "avx" in has else 128
    fstr = feats.flatten() + ",-prefer-256-bit"
    return HostCPU(llvm.get_host_cpu_name(), fstr, bits, "fma" in has, "avx512vnni" in has, "avxvnni" in has)


@functools.lru_cache(maxsize=None)
def host_target(opt: int = 3, cpu: str | None = None, features: str | None = None):
    """A shared target machine for parsing, optimizing and emitting. Never hand it to an
    execution engine: MCJIT takes ownership and frees it with the engine (use new_target).
    ``cpu``/``features`` name another CPU than the host's (to check AVX2-only code paths)."""
    return new_target(opt, cpu, features)


def new_target(opt: int = 3, cpu: str | None = None, features: str | None = None):
    """A fresh target machine for the host (or the named CPU); one per execution engine."""
    host = host_cpu()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=cpu or host.name, features=host.features if features is None else features,
                                        opt=opt, reloc="default", codemodel="jitdefault", jit=True)


def parse(ir_text: str, tm=None):
    tm = tm or host_target()
    try:
        mod = llvm.parse_assembly(str(ir_text))
        mod.verify()
    except RuntimeError as e:
        raise CompileError(f"generated LLVM IR is invalid: {e}") from e
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    return mod


def optimize(mod, tm=None, speed_level: int = 3):
    tm = tm or host_target()
    pto = llvm.create_pipeline_tuning_options(speed_level=speed_level)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


@dataclass
class Library:
    """Machine code held alive by its execution engine; hands out function addresses."""
    engine: object
    keep: tuple = ()
    timings: dict = field(default_factory=dict)
    _fns: dict = field(default_factory=dict)

    def address(self, name: str) -> int:
        a = self.engine.get_function_address(name)
        if not a:
            raise CompileError(f"symbol {name!r} not found in the compiled module")
        return a

    def cfunc(self, name: str, restype, *argtypes):
        """A ctypes function for symbol ``name`` (ctypes releases the GIL during the call)."""
        key = (name, restype, argtypes)
        if key not in self._fns:
            fn = ctypes.CFUNCTYPE(restype, *argtypes)(self.address(name))
            fn._library = self  # the machine code lives as long as the engine: keep it alive
            self._fns[key] = fn
        return self._fns[key]


def jit(ir_text: str, cpu: str | None = None, features: str | None = None, speed_level: int = 3) -> Library:
    """Compile in memory; ``cpu``/``features`` target another CPU than the host's."""
    ctm = host_target(3, cpu, features)
    t0 = time.perf_counter()
    mod = parse(ir_text, ctm)
    t1 = time.perf_counter()
    optimize(mod, ctm, speed_level)
    t2 = time.perf_counter()
    ee = llvm.create_mcjit_compiler(mod, new_target(3, cpu, features))  # the engine owns its machine
    ee.finalize_object()
    t3 = time.perf_counter()
    return Library(ee, (mod,), {"parse": t1 - t0, "optimize": t2 - t1, "codegen": t3 - t2})


def emit_object(ir_text: str, speed_level: int = 3) -> bytes:
    tm = host_target()
    return tm.emit_object(optimize(parse(ir_text, tm), tm, speed_level))


def emit_assembly(ir_text: str, cpu: str | None = None, features: str | None = None, speed_level: int = 3) -> str:
    tm = host_target(3, cpu, features)
    return tm.emit_assembly(optimize(parse(ir_text, tm), tm, speed_level))


def load_object(obj: bytes) -> Library:
    """Load object code emitted earlier (any process); symbols resolve against loaded libraries."""
    empty = parse("", host_target())
    ee = llvm.create_mcjit_compiler(empty, new_target())  # the engine owns its machine
    ref = llvm.ObjectFileRef.from_data(bytes(obj))
    ee.add_object_file(ref)
    ee.finalize_object()
    return Library(ee, (empty, ref))


@functools.lru_cache(maxsize=None)
def ir_hash(ir_text: str) -> str:
    return hashlib.sha256((host_cpu().key() + "\n" + ir_text).encode()).hexdigest()
