"""Ahead-of-time compilation of generated CUDA C with nvcc: a cubin per arch, PTX, the ptxas report.

    bins = compile_source(source, archs=("sm_80", "sm_90"))
    bins.cubins["sm_90"]       # bytes for pycuda.driver.module_from_buffer
    bins.ptx                   # PTX for the lowest arch (JIT fallback on newer GPUs)
    bins.report["k_0"]["sm_80"] == {"regs": 40, "smem": 8448, "stack": 0, "spill_st": 0, ...}
    problems(bins)             # spills, stack frames, register or shared-memory budget overruns

One translation unit per model (the prelude plus every kernel), one nvcc process per arch and
one for the PTX, run concurrently. Results are cached on disk by the sha256 of the source, the
arch, the flags and nvcc's version (``$IRGRAPH_CACHE_DIR/cuda/nvcc``, the CPU backend's
checksummed ``ObjectCache`` format), so a model compiles once per machine.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from irgraph.errors import CompileError

from ..cpu.cache import ObjectCache
from .emulator import cache_root
from .prelude import PRELUDE

DEFAULT_ARCHS = ("sm_80", "sm_90")
FLAGS = ("-std=c++17", "-O3", "-Xptxas=-v")
MAX_STATIC_SMEM = 48 * 1024
MAX_REGS = 255

_FUNC = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+a?)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:, used (\d+) barriers)?(?:, (\d+) bytes smem)?")


def nvcc_path() -> str | None:
    env = os.environ.get("IRGRAPH_NVCC")
    if env:
        return env
    for cand in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and os.path.exists(cand):
            return cand
    return None


@functools.lru_cache(maxsize=None)
def nvcc_version(exe: str) -> str:
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else exe


def parse_ptxas(log: str) -> dict:
    """ptxas -v text -> {kernel: {arch: {regs, smem, stack, spill_st, spill_ld, barriers}}}"""
    out: dict = {}
    cur = None
    for line in log.splitlines():
        m = _FUNC.search(line)
        if m:
            cur = out.setdefault(m.group(1), {}).setdefault(m.group(2), {"smem": 0, "barriers": 0})
            continue
        if cur is None:
            continue
        s = _PROPS.search(line)
        if s:
            cur.update(stack=int(s.group(1)), spill_st=int(s.group(2)), spill_ld=int(s.group(3)))
            continue
        u = _USED.search(line)
        if u:
            cur.update(regs=int(u.group(1)), barriers=int(u.group(2) or 0), smem=int(u.group(3) or 0))
    return out


@dataclass
class Binaries:
    archs: tuple
    cubins: dict = field(default_factory=dict)    # arch -> bytes
    ptx: str = ""
    ptx_arch: str = ""
    report: dict = field(default_factory=dict)    # kernel -> arch -> figures
    source_sha256: str = ""
    cached: bool = False


def translation_unit(source: str) -> str:
    return PRELUDE + "\n" + source + "\n"


def _key(tu: str, what: str, exe: str) -> str:
    h = hashlib.sha256()
    for part in (tu, what, " ".join(FLAGS), nvcc_version(exe)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def compile_source(source: str, archs=DEFAULT_ARCHS, ptx: bool = True, cache: bool = True) -> Binaries:
    """Compile ``source`` (generated kernels, without the prelude) for every arch in ``archs``."""
    exe = nvcc_path()
    if exe is None:
        raise CompileError("target 'cuda' needs nvcc (the CUDA toolkit) to compile kernels",
                           hint="install the CUDA toolkit or put nvcc on PATH (or set IRGRAPH_NVCC)")
    archs = tuple(archs)
    for a in archs:
        if not re.fullmatch(r"sm_\d+a?", a):
            raise CompileError(f"unknown CUDA arch {a!r}", expected="names like sm_80, sm_90")
    tu = translation_unit(source)
    store = ObjectCache(cache_root() / "nvcc") if cache else None
    bins = Binaries(archs, source_sha256=hashlib.sha256(source.encode()).hexdigest())
    ptx_arch = "compute_" + min(archs, key=lambda a: int(re.sub(r"\D", "", a)))[3:].rstrip("a") if archs else "compute_80"
    bins.ptx_arch = ptx_arch
    jobs = {a: _key(tu, a, exe) for a in archs}
    if ptx:
        jobs[ptx_arch] = _key(tu, ptx_arch, exe)
    todo = {}
    for what, key in jobs.items():
        hit = store.get(key) if store else None
        if hit is not None:
            _take(bins, what, hit)
        else:
            todo[what] = key
    bins.cached = not todo
    if todo:
        results = _run_nvcc(exe, tu, list(todo))
        for what, blob in results.items():
            if store:
                store.put(todo[what], blob)
            _take(bins, what, blob)
    return bins


def _take(bins: Binaries, what: str, blob: bytes) -> None:
    rec = json.loads(blob.decode("latin-1"))
    if what.startswith("compute_"):
        bins.ptx = rec["ptx"]
    else:
        bins.cubins[what] = rec["cubin"].encode("latin-1")
        for k, per in parse_ptxas(rec["log"]).items():
            bins.report.setdefault(k, {}).update(per)


def _run_nvcc(exe: str, tu: str, whats: list) -> dict:
    with tempfile.TemporaryDirectory(prefix="irgraph-nvcc-") as d:
        src = Path(d, "kernels.cu")
        src.write_text(tu)
        procs = {}
        for w in whats:
            if w.startswith("compute_"):
                out = Path(d, f"{w}.ptx")
                cmd = [exe, "-ptx", f"-arch={w}", *[f for f in FLAGS if f != "-Xptxas=-v"], str(src), "-o", str(out)]
            else:
                out = Path(d, f"{w}.cubin")
                cmd = [exe, "-cubin", f"-arch={w}", *FLAGS, str(src), "-o", str(out)]
            procs[w] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), out)
        results, errors = {}, []
        for w, (p, out) in procs.items():
            log, _ = p.communicate()
            if p.returncode != 0:
                errors.append(f"{w}:\n{log[-4000:]}")
                continue
            if w.startswith("compute_"):
                results[w] = json.dumps({"ptx": out.read_text()}).encode("latin-1")
            else:
                results[w] = json.dumps({"cubin": out.read_bytes().decode("latin-1"), "log": log}).encode("latin-1")
        if errors:
            raise CompileError("nvcc failed on the generated kernels:\n" + "\n".join(errors))
        return results


# Per-SM limits for the occupancy estimate: registers, threads, blocks, shared memory bytes
# (the driver reserves 1 KiB of shared memory per block on sm_80 and later).
SM_LIMITS = {"sm_80": (65536, 2048, 32, 167936), "sm_86": (65536, 1536, 16, 102400),
             "sm_89": (65536, 1536, 24, 102400), "sm_90": (65536, 2048, 32, 233472)}


def occupancy(regs: int, smem: int, threads: int, arch: str = "sm_90") -> tuple[int, float]:
    """(resident blocks per SM, fraction of the SM's warp slots in use) for a kernel using
    ``regs`` registers per thread and ``smem`` bytes of static shared memory per block."""
    nregs, nthreads, nblocks, nsmem = SM_LIMITS.get(arch.rstrip("a"), SM_LIMITS["sm_90"])
    warps = -(-max(threads, 1) // 32)
    per_warp = -(-max(regs, 1) * 32 // 256) * 256          # allocated in 256-register units
    by_regs = (nregs // per_warp) // warps
    by_threads = nthreads // (warps * 32)
    by_smem = nsmem // (smem + 1024) if smem else nblocks
    blocks = max(0, min(by_regs, by_threads, by_smem, nblocks))
    return blocks, blocks * warps * 32 / nthreads


def problems(bins: Binaries, max_regs: int = MAX_REGS) -> list[str]:
    """The compile gate: register spills, stack frames (local memory), register or static
    shared-memory budget overruns, kernels missing from the report."""
    out = []
    for k, per in sorted(bins.report.items()):
        for arch, r in sorted(per.items()):
            if r.get("spill_st") or r.get("spill_ld"):
                out.append(f"{k}/{arch}: spills {r['spill_st']} B stores, {r['spill_ld']} B loads")
            if r.get("stack"):
                out.append(f"{k}/{arch}: {r['stack']} B stack frame (local memory)")
            if r.get("regs", 0) > max_regs:
                out.append(f"{k}/{arch}: {r['regs']} registers > budget {max_regs}")
            if r.get("smem", 0) > MAX_STATIC_SMEM:
                out.append(f"{k}/{arch}: {r['smem']} B static shared memory > {MAX_STATIC_SMEM}")
    return out
