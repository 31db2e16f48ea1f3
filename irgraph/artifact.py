"""Saved compiled models: ``CompiledModel.save(path)`` and ``irgraph.load(path)``.

An artifact is a **directory** (conventionally ``model.irg``) of plain files, never pickle::

    manifest.json          format + irgraph version, target, options, opt level, signature,
                           memory plan, object-code table, weight table, sha256 of every file
    graph.onnx             the optimized graph (ai.irgraph domain, see the exporter) without its
                           constants, so the interp target and ``irgraph show`` read it
    weights/NNNNNN.npy     every constant of the graph (and its fused bodies), np.load(allow_pickle=False)
    objects/<sha>.o        cpu only: native object code of each compiled program, named by the
                           sha256 of the LLVM IR it was compiled from
    cuda/<sha>/...         cuda / cuda-emulator: the generated CUDA C, cubins per arch and PTX;
                           the launch plan and ptxas figures are in the manifest
                           (``cuda_programs``; see irgraph/backends/cuda/artifact.py)

``load`` checks the format version, the irgraph version (same major version; object code only
from the exact same version), the manifest's own checksum (an edited manifest is refused) and the
sha256 of every listed file, before reading anything else. Object code built for another host CPU
or LLVM (``host_cpu_key``) is not loaded: the programs are recompiled from the stored graph, with a
warning. On load, the cpu target rebuilds its programs from the graph (lowering and placement, a
few ms per node) and takes each program's machine code from ``objects/`` when its LLVM IR hashes to
the stored name, which skips LLVM's optimizer and code generation.

Saving is atomic: the artifact is built in a temp folder beside the destination and renamed into
place, so an interrupted save never leaves a half-written artifact where a good one was. An existing
path is only replaced when it is an artifact (a folder with an irgraph manifest) or an empty folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .errors import IrgraphError
from .fileio import sha256_file
from .version import __version__

FORMAT = "irgraph-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GRAPH_FILE = "graph.onnx"


class ArtifactWarning(UserWarning):
    """Something in an artifact could not be used as is (e.g. object code for another CPU)."""


def _manifest_digest(m: dict) -> str:
    body = {k: v for k, v in m.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _walk_graphs(gp):
    """Every GraphProto in ``gp`` (depth first, a fixed order save and load both follow)."""
    yield gp
    for n in gp.node:
        for a in n.attribute:
            if a.HasField("g"):
                yield from _walk_graphs(a.g)
            for sub in a.graphs:
                yield from _walk_graphs(sub)


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if o is None or isinstance(o, (str, int, float, bool)):
        return o
    return str(o)


def _type_json(t) -> dict:
    return {"dtype": t.dtype.name, "shape": None if t.shape is None else list(t.shape)}


def is_artifact(path) -> bool:
    """Does ``path`` look like an artifact (a folder with an irgraph manifest)?"""
    p = Path(path) / MANIFEST
    try:
        return json.loads(p.read_text()).get("format") == FORMAT
    except Exception:
        return False


def _check_destination(path: Path) -> None:
    if not path.exists() and not path.is_symlink():
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise IrgraphError(f"cannot write {str(path)!r}: folder {str(parent)!r} does not exist")
        return
    if path.is_dir() and not path.is_symlink() and (is_artifact(path) or not any(path.iterdir())):
        return
    raise IrgraphError(f"refusing to overwrite {str(path)!r}: it exists and is not an irgraph artifact")


# ---- save -------------------------------------------------------------------------------------
def save(model, path) -> Path:
    """Write ``model`` (a CompiledModel) as an artifact folder at ``path``; returns the path."""
    path = Path(path)
    _check_destination(path)
    parent = path.parent if str(path.parent) else Path(".")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    try:
        _write(model, tmp)
        _replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; an old artifact there is moved aside first, then removed."""
    if not path.exists():
        os.rename(tmp, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=tmp.parent))
    os.rmdir(old)
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)   # put the previous artifact back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write(model, root: Path) -> None:
    from irgraph.frontends.onnx.exporter import export_model
    graph = model.graph
    proto = export_model(graph)
    (root / "weights").mkdir()
    weights = []
    for gi, gp in enumerate(_walk_graphs(proto.graph)):
        from onnx import numpy_helper
        for init in list(gp.initializer):
            arr = numpy_helper.to_array(init)
            rel = f"weights/{len(weights):06d}.npy"
            np.save(root / rel, np.array(arr, order="C", copy=True), allow_pickle=False)  # ascontiguousarray would make 0-d arrays 1-d
            weights.append({"graph": gi, "name": init.name, "file": rel})
        del gp.initializer[:]
    (root / GRAPH_FILE).write_bytes(proto.SerializeToString())
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "irgraph_version": __version__,
        "target": model.target,
        "opt_level": getattr(model, "opt_level", None),
        "options": _jsonable(model.options),
        "inputs": [{"name": n, **_type_json(t)} for n, t in zip(model.input_names, model.input_types)],
        "outputs": [{"name": n, **_type_json(t)} for n, t in zip(model.output_names, model.output_types)],
        "memory_plan": _jsonable(graph.meta.get("memory_plan")),
        "weights": weights,
        "programs": [],
    }
    if model.target == "cpu":
        manifest.update(_write_objects(model, root))
    elif model.target in ("cuda", "cuda-emulator"):
        from irgraph.backends.cuda import artifact as cuda_artifact
        manifest.update(cuda_artifact.write(model, root))
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            files[p.relative_to(root).as_posix()] = sha256_file(p)
    manifest["files"] = files
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _write_objects(model, root: Path) -> dict:
    """The cpu runner's compiled programs: object code (from the object cache, else emitted
    again) plus what each program needs at run time, for the manifest."""
    from irgraph.backends.cpu import cache as object_cache
    from irgraph.backends.cpu import llvm_target
    from irgraph.backends.cpu.runtime import module_sha256
    runner = model._run
    (root / "objects").mkdir()
    programs = []
    for key, prog in list(getattr(runner, "programs", {}).items()):
        dims, values = key
        if values or getattr(prog, "lib", None) is None:
            continue   # programs specialized on input values are recompiled on demand
        ir = prog.llvm_ir
        sha = module_sha256(ir)
        obj = object_cache.default_cache().get(object_cache.cache_key(ir, "model"))
        if obj is None:
            obj = llvm_target.emit_object(ir)
        rel = f"objects/{sha}.o"
        (root / rel).write_bytes(obj)
        programs.append({
            "dims": {k: int(v) for k, v in dims},
            "ir_sha256": sha,
            "object": rel,
            "entries": [name for kind, name in prog.segments if kind == "native"],
            # the call plan: native entry points and numpy fallbacks, in order
            "segments": [name if kind == "native" else f"fallback:{name.node.name}"
                         for kind, name in prog.segments],
            "arena_bytes": int(prog.arena_bytes),
            "num_threads": int(prog.num_threads),
        })
    return {"host_cpu_key": llvm_target.host_cpu().key(), "programs": programs}


# ---- load -------------------------------------------------------------------------------------
def _fail(path: Path, what: str, msg: str) -> IrgraphError:
    return IrgraphError(f"artifact {str(path)!r}: {what}: {msg}")


def read_manifest(path) -> dict:
    """The validated manifest of the artifact at ``path`` (every file's checksum checked)."""
    path = Path(path)
    if not path.is_dir():
        if path.exists():
            raise IrgraphError(f"{str(path)!r} is not an irgraph artifact (expected a folder with {MANIFEST})")
        raise IrgraphError(f"artifact {str(path)!r} does not exist")
    try:
        m = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise _fail(path, MANIFEST, "missing (not an irgraph artifact?)") from None
    except (ValueError, OSError) as e:
        raise _fail(path, MANIFEST, f"unreadable or not JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise _fail(path, MANIFEST, "not an irgraph artifact manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise _fail(path, MANIFEST, f"format version {m.get('format_version')!r} is not supported "
                    f"(this irgraph {__version__} reads version {FORMAT_VERSION})")
    ver = str(m.get("irgraph_version", ""))
    if ver.split(".")[:1] != __version__.split(".")[:1]:
        raise _fail(path, MANIFEST, f"written by irgraph {ver or '?'}, incompatible with irgraph {__version__}")
    if m.get("manifest_sha256") != _manifest_digest(m):
        raise _fail(path, MANIFEST, "checksum mismatch (the manifest was edited or damaged)")
    files = m.get("files")
    if not isinstance(files, dict) or GRAPH_FILE not in files:
        raise _fail(path, MANIFEST, "no file table")
    root = path.resolve()
    for rel, digest in files.items():
        p = (path / rel)
        if not p.resolve().is_relative_to(root):
            raise _fail(path, rel, "file outside the artifact")
        if not p.is_file():
            raise _fail(path, rel, "missing file")
        if sha256_file(p) != digest:
            raise _fail(path, rel, "checksum mismatch (file corrupted, truncated or replaced)")
    listed = [w.get("file") for w in m.get("weights") or []] + [p.get("object") for p in m.get("programs") or []]
    for rel in listed:
        if rel not in files:
            raise _fail(path, str(rel), "not in the manifest's file table")
    return m


def _load_graph(path: Path, m: dict):
    import onnx
    from onnx import numpy_helper
    from irgraph.frontends.onnx.importer import import_model
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString((path / GRAPH_FILE).read_bytes())
    except Exception as e:
        raise _fail(path, GRAPH_FILE, f"not a valid ONNX model ({e})") from None
    graphs = list(_walk_graphs(proto.graph))
    for w in m["weights"]:
        try:
            arr = np.load(path / w["file"], allow_pickle=False)
            graphs[w["graph"]].initializer.append(numpy_helper.from_array(arr, w["name"]))
        except Exception as e:
            raise _fail(path, w.get("file", "?"), f"cannot read weight {w.get('name')!r} ({e})") from None
    graph = import_model(proto)
    if m.get("memory_plan"):
        graph.meta["memory_plan"] = m["memory_plan"]
    return graph


def load(path):
    """Load an artifact written by ``CompiledModel.save`` (no original model needed)."""
    from .compiled import CompiledModel
    from .targets import get_target
    path = Path(path)
    m = read_manifest(path)
    graph = _load_graph(path, m)
    target = m["target"]
    factory = get_target(target)
    options = dict(m.get("options") or {})
    info = {"path": str(path), "objects_used": 0, "objects_stored": len(m.get("programs") or [])}
    if target == "cpu":
        runner = _load_cpu(path, m, graph, factory, options, info)
    elif target in ("cuda", "cuda-emulator"):
        runner = _load_cuda(path, m, graph, factory, options, info)
    else:
        runner = factory(graph, **options)
    model = CompiledModel(graph, target, runner, options)
    model.opt_level = m.get("opt_level")
    model.pass_report = None
    model.artifact = info
    return model


def _load_cpu(path: Path, m: dict, graph, factory, options: dict, info: dict):
    from irgraph.backends.cpu import llvm_target
    from irgraph.backends.cpu.runtime import use_objects
    programs = m.get("programs") or []
    objects = {}
    if programs:
        host = llvm_target.host_cpu().key()
        if m.get("host_cpu_key") != host:
            warnings.warn(f"artifact {str(path)!r}: object code was built for another CPU/LLVM "
                          f"({m.get('host_cpu_key')}); recompiling from the stored graph", ArtifactWarning,
                          stacklevel=3)
        elif m.get("irgraph_version") != __version__:
            warnings.warn(f"artifact {str(path)!r}: object code is from irgraph {m.get('irgraph_version')}; "
                          f"recompiling from the stored graph", ArtifactWarning, stacklevel=3)
        else:
            objects = {p["ir_sha256"]: (path / p["object"]).read_bytes() for p in programs}
    with use_objects(objects) as used:
        runner = factory(graph, **options)
        for p in programs:
            if p["dims"] and hasattr(runner, "_program"):
                runner._program(dict(p["dims"]), {})   # build the saved specializations now
    info["objects_used"] = len(used.used)
    if objects and len(used.used) < len(objects):
        warnings.warn(f"artifact {str(path)!r}: {len(objects) - len(used.used)} of {len(objects)} "
                      "stored object file(s) did not match the rebuilt programs; those were recompiled",
                      ArtifactWarning, stacklevel=3)
    return runner


def _load_cuda(path: Path, m: dict, graph, factory, options: dict, info: dict):
    """Rebuild the cuda programs from the graph; their cubins come from the artifact (matched by
    the sha256 of the regenerated source), so no nvcc is needed where the artifact is run."""
    from irgraph.backends.cuda import artifact as cuda_artifact
    from irgraph.backends.cuda.target import use_binaries
    table = cuda_artifact.binaries_table(path, m)
    info["objects_stored"] = len(table)
    with use_binaries(table) as used:
        runner = factory(graph, **options)
        for p in m.get("cuda_programs") or []:
            if p["dims"] and hasattr(runner, "_program"):
                runner._program(dict(p["dims"]), {})
    info["objects_used"] = len(set(used.used))
    return runner


def _host_key() -> str:
    from irgraph.backends.cpu import llvm_target
    return llvm_target.host_cpu().key()


def summary(path) -> str:
    """The manifest of the artifact at ``path`` in a few lines (after validating it)."""
    m = read_manifest(path)

    def sig(vs):
        return ", ".join(f"{v['name']}: {v['dtype']}{v['shape']}" for v in vs)
    lines = [f"artifact {path}: format {m['format_version']}, irgraph {m['irgraph_version']}, "
             f"target {m['target']}, -O{m.get('opt_level')}, options {m.get('options') or {}}",
             f"  inputs:  {sig(m['inputs'])}", f"  outputs: {sig(m['outputs'])}"]
    nbytes = sum((Path(path) / w["file"]).stat().st_size for w in m["weights"])
    lines.append(f"  weights: {len(m['weights'])} arrays, {nbytes} bytes on disk")
    plan = m.get("memory_plan")
    if plan:
        lines.append(f"  memory plan: arena {plan.get('arena_bytes')} bytes for dims {plan.get('dims')}")
    if m["target"] == "cpu":
        key = str(m.get("host_cpu_key"))
        lines.append(f"  host cpu: {key.split('|')[0]} ({key.split('|', 2)[-1]}), "
                     f"{'this host' if _host_key() == key else 'ANOTHER host: will recompile'}")
        for p in m.get("programs") or []:
            lines.append(f"  program dims {p['dims'] or '{}'}: {p['object']}, entries {p['entries']}, "
                         f"arena {p['arena_bytes']} bytes")
    if m["target"] in ("cuda", "cuda-emulator"):
        from irgraph.backends.cuda import artifact as cuda_artifact
        lines.extend(cuda_artifact.summary_lines(m))
    lines.append(f"  files: {len(m['files'])} (all checksums ok)")
    return "\n".join(lines)
