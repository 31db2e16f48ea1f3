"""The CUDA part of an artifact (``irgraph/artifact.py`` writes the rest and checksums every file).

For each compiled specialization (``cuda_programs`` in the manifest):

    cuda/<sha>/kernels.cu         the CUDA C source (prelude included), for reading and rebuilding
    cuda/<sha>/sm_80.cubin ...    target ``cuda``: machine code per arch
    cuda/<sha>/kernels.ptx        target ``cuda``: PTX for newer GPUs (JIT by the driver)

and in the manifest: the dims, arena and weight bytes, and the launch plan — each launch's
function, schedule, grid, block, buffers (input/output/const/arena with index or byte offset)
and, per arch, ptxas's registers, shared memory, spills and stack frame. ``<sha>`` is the
sha256 of the generated source: loading regenerates the source from the stored graph and takes
the cubins whose hash matches, so a GPU machine needs no nvcc.
"""
from __future__ import annotations

from pathlib import Path

from .nvcc import Binaries, occupancy, translation_unit
from .program import LaunchStep

CUDA_TARGETS = ("cuda", "cuda-emulator")


def write(model, root: Path) -> dict:
    runner = model._run
    (root / "cuda").mkdir()
    programs = []
    for key, exe in list(getattr(runner, "programs", {}).items()):
        dims, values = key
        if values:
            continue   # specialized on input values: recompiled on demand
        prog = exe.program
        sha = prog.source_sha256
        d = root / "cuda" / sha[:16]
        d.mkdir(exist_ok=True)
        rel = f"cuda/{sha[:16]}"
        (d / "kernels.cu").write_text(translation_unit(prog.source))
        rec = {"dims": {k: int(v) for k, v in dims}, "source_sha256": sha, "source": f"{rel}/kernels.cu",
               "arena_bytes": int(prog.arena_bytes), "weights_bytes": int(prog.const_bytes),
               "cubins": {}, "ptx": None, "ptx_arch": None, "launches": []}
        bins = getattr(exe, "binaries", None)
        if bins is not None:
            for arch, cubin in sorted(bins.cubins.items()):
                (d / f"{arch}.cubin").write_bytes(cubin)
                rec["cubins"][arch] = f"{rel}/{arch}.cubin"
            if bins.ptx:
                (d / "kernels.ptx").write_text(bins.ptx)
                rec["ptx"], rec["ptx_arch"] = f"{rel}/kernels.ptx", bins.ptx_arch
        report = bins.report if bins is not None else {}
        for step in prog.plan:
            if isinstance(step, LaunchStep):
                la = step.launch
                rec["launches"].append({
                    "fn": la.fn, "kernel": step.kernel, "kind": la.kind, "config": la.config,
                    "grid": list(la.grid), "block": list(la.block),
                    "buffers": [[k, int(i)] for k, i in step.refs],
                    "flops": int(la.flops), "bytes": int(la.bytes),
                    "ptxas": report.get(la.fn, {})})
            else:
                rec["launches"].append({"fallback": step.step.node.name})
        programs.append(rec)
    return {"cuda_programs": programs}


def binaries_table(path: Path, manifest: dict) -> dict:
    """{source sha256: Binaries} from the artifact's cubins and PTX (checksums already verified)."""
    out = {}
    for rec in manifest.get("cuda_programs") or []:
        if not rec.get("cubins"):
            continue
        b = Binaries(tuple(sorted(rec["cubins"])), source_sha256=rec["source_sha256"])
        for arch, rel in rec["cubins"].items():
            b.cubins[arch] = (path / rel).read_bytes()
        if rec.get("ptx"):
            b.ptx = (path / rec["ptx"]).read_text()
            b.ptx_arch = rec.get("ptx_arch") or ""
        for la in rec.get("launches") or []:
            if "fn" in la:
                b.report[la["fn"]] = dict(la.get("ptxas") or {})
        out[rec["source_sha256"]] = b
    return out


def summary_lines(manifest: dict) -> list[str]:
    """What ``irgraph show model.irg`` lists: each kernel launch with registers and shared memory."""
    lines = []
    for rec in manifest.get("cuda_programs") or []:
        archs = sorted(rec.get("cubins") or {})
        launches = [la for la in rec.get("launches") or [] if "fn" in la]
        lines.append(f"  program dims {rec['dims'] or '{}'}: {len(launches)} launches, arena "
                     f"{rec['arena_bytes']} bytes, weights {rec['weights_bytes']} bytes, "
                     f"cubins {', '.join(archs) or 'none (emulator)'}"
                     + (f", PTX {rec['ptx_arch']}" if rec.get("ptx") else ""))
        for la in rec.get("launches") or []:
            if "fn" not in la:
                lines.append(f"    fallback {la['fallback']} (numpy)")
                continue
            per = la.get("ptxas") or {}
            threads = 1
            for b in la.get("block") or (1,):
                threads *= int(b)
            figs = "; ".join(f"{a}: {r.get('regs', '?')} regs, {r.get('smem', 0)} B smem"
                             + (f", occupancy {occupancy(r['regs'], r.get('smem', 0), threads, a)[1]:.0%}"
                                if "regs" in r else "")
                             + (f", spills {r.get('spill_st', 0)}/{r.get('spill_ld', 0)} B" if r.get("spill_st") or r.get("spill_ld") else "")
                             + (f", stack {r['stack']} B" if r.get("stack") else "")
                             for a, r in sorted(per.items()))
            sched = la["kind"] + (f" {la['config']}" if la.get("config") else "")
            lines.append(f"    {la['fn']}  [{sched}] grid {tuple(la['grid'])} block {tuple(la['block'])}"
                         + (f"  {figs}" if figs else ""))
    return lines
