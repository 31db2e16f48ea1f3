"""The package layout of DESIGN.md holds: only ``irgraph.*`` names are imported, and the core
never imports a frontend, pass or backend (except the API/CLI layer that wires them)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ["irgraph", "passes", "backends", "frontends", "tests", "benchmarks", "examples"]
TOP_LEVEL = re.compile(r"^\s*(?:import|from)\s+(passes|backends|frontends)\b", re.M)
UPWARD = re.compile(r"^\s*(?:import|from)\s+(?:irgraph\.(?:frontends|passes|backends)|\.+(?:frontends|passes|backends))\b", re.M)
CORE_WIRING = {"api.py", "cli.py", "targets.py", "artifact.py", "bench.py"}  # the API/CLI layer
WIRING_PACKAGES = {"training"}   # irgraph/training/ is API layer too: the train step needs autodiff


def _py_files(d):
    return sorted((ROOT / d).rglob("*.py")) if (ROOT / d).is_dir() else []


def test_no_top_level_imports_of_mapped_folders():
    bad = []
    for d in SOURCE_DIRS:
        for f in _py_files(d):
            for m in TOP_LEVEL.finditer(f.read_text()):
                bad.append(f"{f.relative_to(ROOT)}: {m.group(0).strip()}")
    assert not bad, "import irgraph.<name> instead of the folder name:\n" + "\n".join(bad)


def test_core_does_not_import_frontends_passes_backends():
    bad = []
    for f in _py_files("irgraph"):
        if f.name in CORE_WIRING and f.parent.name == "irgraph":
            continue
        if f.parent.name in WIRING_PACKAGES and f.parent.parent.name == "irgraph":
            continue
        for m in UPWARD.finditer(f.read_text()):
            bad.append(f"{f.relative_to(ROOT)}: {m.group(0).strip()}")
    assert not bad, "the core must not depend on frontends/passes/backends:\n" + "\n".join(bad)


def test_passes_and_backends_do_not_import_frontends():
    bad = []
    for d in ("passes", "backends"):
        for f in _py_files(d):
            for m in re.finditer(r"^\s*(?:import|from)\s+irgraph\.frontends\b", f.read_text(), re.M):
                bad.append(f"{f.relative_to(ROOT)}: {m.group(0).strip()}")
    assert not bad, "\n".join(bad)


def test_subpackages_installed_under_one_namespace():
    import irgraph.backends
    import irgraph.frontends.onnx.converters
    import irgraph.passes
    for mod in (irgraph.passes, irgraph.backends, irgraph.frontends.onnx.converters):
        assert Path(mod.__file__).resolve().is_relative_to(ROOT)
    # one copy of the registry: a second import path would have raised "registered twice"
    from irgraph.ops.registry import all_ops
    assert "matmul" in all_ops()
