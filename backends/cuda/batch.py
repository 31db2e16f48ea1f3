"""Many programs' kernels in a few translation units: deduplicated, sharded, cached on disk.

    batch = KernelBatch(programs, shards=8)
    mod = batch.emulator(opt="-O0")             # launch(fn, ...) for the fn of any program
    bins = batch.compile(("sm_80", "sm_90"))    # ptxas report keyed by every program's fn
    nvcc.problems(bins)                         # the compile gate over all of them

Test suites print hundreds of small programs (ONNX node cases) whose kernels repeat: the same
op on the same shapes prints the same function up to its name, its buffers' names and the
numbering of its loop variables. Each function is renamed canonically (``k_<sha>``, parameters
``irgP<n>``, variables ``irgV<n>``), so identical kernels are compiled once. Unique kernels go to
``shards`` translation units by their hash — a changed kernel invalidates one shard of the
on-disk caches (``emulator.build`` and ``nvcc.compile_source`` are keyed by the source hash),
not the whole batch. Shards build concurrently, ``workers`` at a time.
"""
from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor

from . import emulator, nvcc
from .printer import c_name


def canonical(text: str, fn: str, params: list[str], var_names) -> tuple[str, str]:
    """(canonical name, canonical text) of function ``fn``: parameters and variables renamed
    in order of appearance, the function named by the hash of the result."""
    names = {fn: "irgK"}
    for i, p in enumerate(params):
        names[p] = f"irgP{i}"
    order = [v for v in var_names if v not in names]
    if order:
        found = re.findall(r"\b(" + "|".join(re.escape(v) for v in order) + r")\b", text)
        seen: dict = {}
        for v in found:
            seen.setdefault(v, f"irgV{len(seen)}")
        names.update(seen)
    pat = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(names, key=len, reverse=True)) + r")\b")
    body = pat.sub(lambda m: names[m.group(1)], text)
    cname = "k_" + hashlib.sha256(body.encode()).hexdigest()[:20]
    return cname, body.replace("irgK(", cname + "(", 1)


class KernelBatch:
    def __init__(self, programs, shards: int = 8):
        self.alias: dict = {}      # program fn -> canonical fn
        self.texts: dict = {}      # canonical fn -> text
        self.params: dict = {}     # canonical fn -> C parameter types
        self.launches = 0
        for p in programs:
            for ks in p.kernel_sources:
                for la in ks.launches:
                    self.launches += 1
                    if la.fn in self.alias:
                        continue
                    cname, text = canonical(ks.functions[la.fn], la.fn, [c_name(b) for b in la.buffers],
                                            ks.var_names.get(la.fn, ()))
                    self.alias[la.fn] = cname
                    if cname not in self.texts:
                        self.texts[cname] = text
                        self.params[cname] = p.kernel_params[la.fn]
        self.shards: list[list[str]] = [[] for _ in range(max(1, int(shards)))]
        for cname in sorted(self.texts):
            self.shards[int(cname[2:10], 16) % len(self.shards)].append(cname)
        self.shards = [s for s in self.shards if s]
        self.shard_of = {c: i for i, s in enumerate(self.shards) for c in s}

    @property
    def unique(self) -> int:
        return len(self.texts)

    def source(self, i: int) -> str:
        return "\n\n".join(self.texts[c] for c in self.shards[i]) + "\n"

    # ---- emulator -------------------------------------------------------------------------------
    def emulator(self, opt: str = "-O2", sanitize: bool = False, workers: int = 2) -> "BatchModule":
        def one(i):
            return emulator.build(self.source(i), {c: self.params[c] for c in self.shards[i]},
                                  sanitize=sanitize, opt=opt)
        with ThreadPoolExecutor(max(1, workers)) as ex:
            mods = list(ex.map(one, range(len(self.shards))))
        return BatchModule(self, mods)

    # ---- nvcc -----------------------------------------------------------------------------------
    def compile(self, archs=nvcc.DEFAULT_ARCHS, workers: int = 1) -> nvcc.Binaries:
        """Every shard through nvcc (cubins only, no PTX); the report covers every program fn.
        Each shard's archs already run as concurrent nvcc processes, hence one worker."""
        with ThreadPoolExecutor(max(1, workers)) as ex:
            parts = list(ex.map(lambda i: nvcc.compile_source(self.source(i), archs, ptx=False),
                                range(len(self.shards))))
        out = nvcc.Binaries(tuple(archs), cached=all(b.cached for b in parts))
        for b in parts:
            out.report.update(b.report)
        for fn, c in self.alias.items():
            if c in out.report:
                out.report[fn] = out.report[c]
        out.shards = parts
        return out


class BatchModule:
    """``EmuModule``'s interface over the shard libraries, by the programs' own function names."""

    def __init__(self, batch: KernelBatch, modules: list):
        self.batch = batch
        self.modules = modules

    def launch(self, name: str, grid, block, ptrs, order: str = "forward", seed: int = 0) -> None:
        c = self.batch.alias.get(name, name)
        self.modules[self.batch.shard_of[c]].launch(c, grid, block, ptrs, order, seed)

    def alloc(self, nbytes: int) -> int:
        return self.modules[0].alloc(nbytes)

    def free(self, ptr: int) -> None:
        self.modules[0].free(ptr)
