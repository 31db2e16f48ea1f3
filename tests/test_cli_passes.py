"""The optimizer on the command line and in ``irgraph.compile``: ``show -O2`` (IR, fused groups
with their ONNX node names, memory plan, ``--stats`` pass table and kernel counts, ``--json``,
``--dump-after``, ``--format onnx|dot|svg``) and ``run -O2 --bisect-passes``.

Most tests run the CLI in-process over a small stand-in -O2 pipeline (a toy epilogue fusion and
a stand-in memory plan), so the CLI is checked exactly whatever the real passes do; the tests
at the end run the real -O2 pipeline through ``python -m irgraph``.
"""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import numpy as np
import onnx
import pytest

import irgraph
import models
from irgraph import cli
from irgraph.errors import CompileError
from irgraph.passes.draw import to_dot
from irgraph.passes.group import make_group
from irgraph.passes.pipelines import PIPELINES
from irgraph.passes.registry import Pass

PLAN = {"peak_bytes": 4096, "naive_bytes": 10240, "lower_bound_bytes": 4000, "alignment": 64}


def _toy_fuse(g, ctx):
    """matmul + bias add (+ relu) -> one fused group, the way an epilogue fusion would."""
    users = g.users()
    changed = False
    for mm in [n for n in g.nodes if n.op == "matmul"]:
        chain = [mm]
        while len(chain) < 3:
            us = users.get(chain[-1].outputs[0], [])
            if len(us) != 1 or us[0].op != ("add", "relu")[len(chain) - 1]:
                break
            chain.append(us[0])
        if len(chain) > 1:
            make_group(g, chain, "matmul_epilogue")
            changed = True
            users = g.users()
    return changed


def _toy_plan(g, ctx):
    g.meta["memory_plan"] = dict(PLAN)
    return False


TOY_O2 = [Pass("toy_fuse", _toy_fuse), "eliminate_dead_code", Pass("toy_plan", _toy_plan)]


@pytest.fixture
def toy_o2(monkeypatch):
    monkeypatch.setitem(PIPELINES, 2, list(TOY_O2))


@pytest.fixture
def mlp(tmp_path):
    m = models.mlp(sizes=(8, 16, 4))
    p = tmp_path / "mlp.onnx"
    onnx.save(m, p)
    return m, str(p)


def _main(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err, *words):
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("irgraph: error:"), err
    for w in words:
        assert w in lines[0], lines[0]


def _onnx_names(m, *op_types):
    return [n.name for n in m.graph.node if n.op_type in op_types]


# ---- show -O2 ----------------------------------------------------------------------------------

def test_show_O2_prints_optimized_ir_groups_with_onnx_names_and_memory(toy_o2, mlp, capsys):
    m, path = mlp
    code, out, err = _main(capsys, "show", path, "-O2")
    assert code == 0, err
    assert "= fused(%x" in out                               # the optimized IR
    assert "\nkernels: 4 (fused 2, transpose 2)\n" in out
    gemm0, gemm1 = _onnx_names(m, "Gemm")
    (relu,) = _onnx_names(m, "Relu")
    groups = out[out.index("fused groups (2):"):]
    assert "matmul+add+relu" in groups and "matmul+add\n" in groups
    assert f"from: {gemm0}, {relu}" in groups and f"from: {gemm1}\n" in groups
    assert "peak arena   4,096 bytes (4.00 KiB)" in out
    assert "naive sum    10,240 bytes" in out and "lower bound  4,000 bytes" in out
    assert "peak/lower bound 1.024, peak/naive 0.400" in out
    assert "toy_fuse" not in out                              # the pass table needs --stats


def test_show_stats_prints_pass_table_and_kernel_counts(toy_o2, mlp, capsys):
    code, out, err = _main(capsys, "show", mlp[1], "-O2", "--stats", "--no-ir")
    assert code == 0, err
    assert "graph mlp(" not in out
    table = out[out.index("passes (-O2):"):]
    rows = [ln.split()[0] for ln in table.splitlines()[3:6]]
    assert rows == ["toy_fuse", "eliminate_dead_code", "toy_plan"]
    # node counts are top-level nodes (kernels): 2 transposes + 2 matmuls + 2 adds + relu ->
    # 2 transposes + 2 groups; the change column lists what the groups swallowed
    assert re.search(r"toy_fuse\s+\S+\s+7 → 4\s+-add×2, -matmul×2, -relu×1, \+fused×2\n", table)
    assert "kernels 7 → 4" in table
    assert "kernels: 7 before, 4 after (2 fused groups)" in out


def test_show_stats_at_O0_counts_kernels_without_passes(mlp, capsys):
    code, out, err = _main(capsys, "show", mlp[1], "--stats", "--no-ir")
    assert code == 0, err
    assert "kernels: 7 before, 7 after (0 fused groups)" in out
    assert "memory plan:" not in out and "fused groups (" not in out


def test_show_json_is_one_document_with_passes_kernels_memory(toy_o2, mlp, capsys):
    m, path = mlp
    code, out, err = _main(capsys, "show", path, "-O2", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["parameters"] == 212 and s["opt_level"] == 2       # the -O0 summary keys stay
    assert [p["name"] for p in s["passes"]] == ["toy_fuse", "eliminate_dead_code", "toy_plan"]
    for p in s["passes"]:
        assert isinstance(p["seconds"], float) and p["seconds"] >= 0
        assert isinstance(p["nodes_before"], int) and isinstance(p["nodes_after"], int)
    assert (s["passes"][0]["nodes_before"], s["passes"][0]["nodes_after"]) == (7, 4)
    k = s["kernels"]
    assert (k["before"], k["count"], k["fused"]) == (7, 4, 2)
    assert k["ops"] == {"fused": 2, "transpose": 2}
    gemm0, gemm1 = _onnx_names(m, "Gemm")
    assert [g["sources"] for g in k["groups"]] == [[gemm0, *_onnx_names(m, "Relu")], [gemm1]]
    assert [g["ops"] for g in k["groups"]] == [["matmul", "add", "relu"], ["matmul", "add"]]
    assert {g["group"] for g in k["groups"]} == {"matmul_epilogue"}
    assert all(g["name"] and g["label"] for g in k["groups"])
    assert s["memory"] == PLAN


def test_show_json_at_O0_has_no_passes_and_no_plan(mlp, capsys):
    code, out, err = _main(capsys, "show", mlp[1], "--json")
    s = json.loads(out)
    assert s["opt_level"] == 0 and s["passes"] == [] and s["memory"] is None
    assert s["kernels"] == {"before": 7, "count": 7, "fused": 0, "groups": [],
                            "ops": {"add": 2, "matmul": 2, "transpose": 2, "relu": 1}}


def test_show_dim_sizes_reach_the_memory_planner(mlp, monkeypatch, capsys):
    def plan_with_dims(g, ctx):
        g.meta["memory_plan"] = dict(PLAN, dims=ctx.option("plan_memory.dims"))
        return False
    monkeypatch.setitem(PIPELINES, 2, [Pass("plan_with_dims", plan_with_dims)])
    code, out, err = _main(capsys, "show", mlp[1], "-O2", "--dim", "N=32", "--json")
    assert code == 0, err
    assert json.loads(out)["memory"]["dims"] == {"N": 32}
    code, out, err = _main(capsys, "show", mlp[1], "-O2", "--dim", "N=32", "--no-ir")
    assert "dims N=32" in out


def test_show_output_to_file_is_atomic(toy_o2, mlp, tmp_path, capsys):
    out_file = tmp_path / "report.json"
    code, out, err = _main(capsys, "show", mlp[1], "-O2", "--json", "-o", out_file)
    assert code == 0, err
    assert out.strip() == f"wrote {out_file}"
    assert json.loads(out_file.read_text())["kernels"]["count"] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---- --dump-after --------------------------------------------------------------------------------

def test_dump_after_one_pass_writes_text_and_onnx(toy_o2, mlp, tmp_path, capsys):
    m, path = mlp
    d = tmp_path / "dumps"
    code, out, err = _main(capsys, "show", path, "-O2", "--no-ir", "--dump-after", "toy_fuse", "--dump-dir", d)
    assert code == 0, err
    assert sorted(p.name for p in d.iterdir()) == ["01_toy_fuse.onnx", "01_toy_fuse.txt"]
    assert f"wrote {d / '01_toy_fuse.txt'}" in out
    assert "fused(" in (d / "01_toy_fuse.txt").read_text()
    # the ONNX dump is a model irgraph reads back and runs to the same numbers
    feeds = models.feeds(m, {"N": 3})
    want = irgraph.compile(m).run(**feeds)
    got = irgraph.compile(str(d / "01_toy_fuse.onnx")).run(*feeds.values())
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)


def test_dump_after_all_writes_every_pass_in_order(toy_o2, mlp, tmp_path, capsys):
    d = tmp_path / "dumps"
    code, out, err = _main(capsys, "show", mlp[1], "-O2", "--json", "--dump-after", "all", "--dump-dir", d)
    assert code == 0, err
    names = sorted(p.name for p in d.iterdir())
    assert names == [f"{i:02d}_{p}.{ext}" for i, p in enumerate(["toy_fuse", "eliminate_dead_code", "toy_plan"], 1)
                     for ext in ("onnx", "txt")]
    assert sorted(json.loads(out)["files"]) == sorted(str(d / n) for n in names)


def test_dump_after_default_folder_is_irgraph_dump_in_cwd(toy_o2, mlp, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _main(capsys, "show", mlp[1], "-O2", "--no-ir", "--dump-after", "toy_plan")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "irgraph-dump").iterdir()) == ["03_toy_plan.onnx", "03_toy_plan.txt"]


@pytest.mark.parametrize("args,words", [
    (["-O2", "--dump-after", "fold_everything"], ["'fold_everything' is not a pass of -O2",
                                                  "passes: toy_fuse, eliminate_dead_code, toy_plan"]),
    (["--dump-after", "toy_fuse"], ["--dump-after needs an optimization level"]),
    (["-O2", "--dump-after", "all", "--dump-dir", "no/such/parent/dumps"], ["does not exist"]),
    (["-O2", "--format", "onnx"], ["--format onnx writes a binary file", "-o FILE"]),
    (["-O2", "--format", "dot", "--json"], ["both print to stdout"]),
    (["-O2", "--format", "onnx", "-o", "no/such/dir/m.onnx"], ["does not exist"]),
    (["-O9"], ["unknown optimization level -O9"]),
    (["-O2", "--dim", "N"], ["--dim takes NAME=SIZE"]),
])
def test_show_errors_are_one_line(toy_o2, mlp, tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    code, out, err = _main(capsys, "show", mlp[1], *args)
    _one_line_error(code, err, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx"]  # nothing written


# ---- --format onnx / dot / svg -------------------------------------------------------------------

def test_format_onnx_writes_the_optimized_graph(toy_o2, mlp, tmp_path, capsys):
    m, path = mlp
    out_file = tmp_path / "opt.onnx"
    code, out, err = _main(capsys, "show", path, "-O2", "--format", "onnx", "-o", out_file)
    assert code == 0, err
    assert out.strip() == f"wrote {out_file}"
    g = irgraph.to_graph(str(out_file))
    assert g.op_histogram(recursive=False)["fused"] == 2
    feeds = models.feeds(m, {"N": 2}, seed=4)
    np.testing.assert_allclose(irgraph.compile(g).run(*feeds.values())[0], irgraph.compile(m).run(**feeds)[0],
                               rtol=1e-5, atol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _check_dot_syntax(text):
    """Balanced braces, and every edge joins two declared vertices."""
    assert text.startswith("digraph ") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    declared = set(re.findall(r"^\s*(n\d+) \[", text, re.M))
    for a, b in re.findall(r"^\s*(n\d+) -> (n\d+)", text, re.M):
        assert a in declared and b in declared


def test_format_dot_draws_fused_groups_as_clusters(toy_o2, mlp, capsys):
    m, path = mlp
    code, out, err = _main(capsys, "show", path, "-O2", "--format", "dot")
    assert code == 0, err
    _check_dot_syntax(out)
    clusters = re.findall(r"subgraph (cluster_\d+) \{\n\s*label=\"([^\"]*)\"", out)
    assert len(clusters) == 2
    gemm0, gemm1 = _onnx_names(m, "Gemm")
    assert clusters[0][1].startswith("matmul_epilogue: ") and f"from {gemm0}, " in clusters[0][1]
    assert f"from {gemm1}" in clusters[1][1]
    # the ops of each body sit inside their cluster: matmul, add, relu in the first
    start = out.index("subgraph cluster_1 {")
    first = out[start:out.index("\n  }\n", start)]
    assert [op for op in re.findall(r'label="(\w+)\\n', first)] == ["matmul", "add", "relu"]
    assert 'label="x\\nfloat32[N,8]"' in out and 'label="logits\\nfloat32[N,4]"' in out


def test_dot_edges_follow_values_through_groups():
    # x -> [fused: matmul -> add -> relu] -> [fused: matmul -> add] -> logits: every op reachable
    g = irgraph.to_graph(models.mlp(sizes=(8, 16, 4)))
    _toy_fuse(g, None)
    text = to_dot(g)
    ids = dict(re.findall(r"^\s*(n\d+) \[(?:shape=ellipse, \S+, )?label=\"(\w+)", text, re.M))
    edges = re.findall(r"^\s*(n\d+) -> (n\d+)", text, re.M)
    succ = {}
    for a, b in edges:
        succ.setdefault(ids[a], []).append(ids[b])
    assert succ["x"] == ["matmul"]
    assert succ["relu"] == ["matmul"]  # group 1's relu feeds group 2's matmul
    assert sorted(succ["add"]) == ["logits", "relu"]


def _fake_dot(folder, log):
    """A stand-in for graphviz's dot: checks -Tsvg, keeps its input, prints a tiny SVG."""
    os.makedirs(folder, exist_ok=True)
    exe = os.path.join(folder, "dot")
    with open(exe, "w") as f:
        f.write(f"#!/bin/sh\n[ \"$1\" = \"-Tsvg\" ] || exit 3\ncat > '{log}'\n"
                "head -c 8 '" + str(log) + "' | grep -q '^digraph' || exit 4\n"
                "echo '<svg xmlns=\"http://www.w3.org/2000/svg\"><!-- fake --></svg>'\n")
    os.chmod(exe, os.stat(exe).st_mode | stat.S_IXUSR)
    return folder


def test_format_svg_runs_graphviz_dot(toy_o2, mlp, tmp_path, monkeypatch, capsys):
    log = tmp_path / "dot_input.txt"
    monkeypatch.setenv("PATH", _fake_dot(str(tmp_path / "bin"), log) + os.pathsep + os.environ["PATH"])
    code, out, err = _main(capsys, "show", mlp[1], "-O2", "--format", "svg")
    assert code == 0, err
    assert out.strip() == '<svg xmlns="http://www.w3.org/2000/svg"><!-- fake --></svg>'
    code, dot_out, _ = _main(capsys, "show", mlp[1], "-O2", "--format", "dot")
    assert log.read_text() == dot_out            # dot was fed our drawing
    svg_file = tmp_path / "g.svg"
    code, out, err = _main(capsys, "show", mlp[1], "-O2", "--format", "svg", "-o", svg_file)
    assert code == 0 and "<svg" in svg_file.read_text()


def test_format_svg_without_graphviz_is_a_clear_one_line_error(toy_o2, mlp, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out_file = tmp_path / "g.svg"
    code, out, err = _main(capsys, "show", mlp[1], "-O2", "--format", "svg", "-o", out_file)
    _one_line_error(code, err, "graphviz", "'dot' program was not found", "apt-get install graphviz",
                    "--format dot")
    assert not out_file.exists()


def test_format_svg_when_graphviz_itself_fails(toy_o2, mlp, tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dot").write_text("#!/bin/sh\necho 'Error: syntax error in line 1' >&2\nexit 1\n")
    os.chmod(bin_dir / "dot", 0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    code, out, err = _main(capsys, "show", mlp[1], "-O2", "--format", "svg")
    _one_line_error(code, err, "graphviz's dot failed (exit 1): Error: syntax error in line 1")


@pytest.mark.skipif(not __import__("shutil").which("dot"), reason="graphviz is not installed")
def test_format_svg_with_real_graphviz(toy_o2, mlp, capsys):
    code, out, err = _main(capsys, "show", mlp[1], "-O2", "--format", "svg")
    assert code == 0, err
    assert "<svg" in out and out.count('class="cluster"') == 2 and "matmul_epilogue" in out


# ---- run -O2 --bisect-passes ---------------------------------------------------------------------

def _add_becomes_sub(g, ctx):
    """Deliberately wrong: a bias add (inside a group or not) becomes a subtraction."""
    for n in g.nodes:
        body = n.attrs.get("body") if n.op == "fused" else None
        for b in (body.nodes if body is not None else [n]):
            if b.op == "add":
                b.op = "sub"
                return True
    return False


def test_bisect_passes_names_the_wrong_pass(mlp, monkeypatch, capsys):
    monkeypatch.setitem(PIPELINES, 2, [TOY_O2[0], Pass("add_becomes_sub", _add_becomes_sub), *TOY_O2[1:]])
    code, out, err = _main(capsys, "run", mlp[1], "-O2", "--bisect-passes", "--dim", "N=4")
    assert code == 1, err
    assert "logits: float32[4, 4]" in out
    assert "first pass that changed the outputs: 'add_becomes_sub' (#2 of 4) changed the outputs" in out
    assert re.search(r"logits: \d+ of 16 elements differ, max \|Δ\| [\d.e+-]+, max rel [\d.e+-]+ "
                     r"\(beyond rtol 0.0001, atol 1e-05\)", out)
    assert "passes before it agree with -O0: toy_fuse" in out


def test_bisect_passes_with_a_correct_pipeline(toy_o2, mlp, capsys):
    code, out, err = _main(capsys, "run", mlp[1], "-O2", "--bisect-passes", "--rtol", "1e-6", "--atol", "0")
    assert code == 0, err
    assert "no pass changed the outputs: 3 passes checked" in out and "rtol 1e-06, atol 0" in out


def test_bisect_passes_names_a_pass_that_crashes(mlp, monkeypatch, capsys):
    def crash(g, ctx):
        raise KeyError("lost track of a value")
    monkeypatch.setitem(PIPELINES, 2, ["eliminate_dead_code", Pass("crashing", crash)])
    code, out, err = _main(capsys, "run", mlp[1], "-O2", "--bisect-passes")
    assert code == 1 and err == ""
    assert "'crashing' (#2 of 2) raised an error: pass 'crashing' failed: KeyError" in out
    # without --bisect-passes the same failure is a one-line error naming the pass
    code, out, err = _main(capsys, "run", mlp[1], "-O2")
    _one_line_error(code, err, "pass 'crashing' failed")


def test_bisect_passes_needs_an_opt_level(mlp, capsys):
    code, out, err = _main(capsys, "run", mlp[1], "--bisect-passes")
    _one_line_error(code, err, "--bisect-passes compares an optimization level with -O0")


def test_run_O2_prints_the_optimized_outputs(toy_o2, mlp, tmp_path, capsys):
    m, path = mlp
    out_file = tmp_path / "o.npz"
    code, out, err = _main(capsys, "run", path, "-O2", "--dim", "N=3", "--seed", "5", "--output", out_file)
    assert code == 0, err
    with np.load(out_file) as z:
        got = z["logits"]
    from irgraph.random_inputs import random_inputs
    model = irgraph.compile(m)
    x = random_inputs(dict(zip(model.input_names, model.input_types)), seed=5, dims={"N": 3})
    np.testing.assert_allclose(got, model(**x), rtol=1e-5, atol=1e-6)


# ---- irgraph.compile(opt_level=...) --------------------------------------------------------------

def test_compile_opt_level(toy_o2):
    m = models.mlp(sizes=(8, 16, 4))
    g = irgraph.to_graph(m)
    before = str(g)
    ref = irgraph.compile(g)
    assert ref.opt_level == 0 and ref.pass_report is None and ref.graph is g   # interp: the oracle
    opt = irgraph.compile(g, opt_level=2)
    assert str(g) == before                                                     # the caller's graph is untouched
    assert opt.opt_level == 2 and opt.graph is not g
    assert opt.graph.op_histogram(recursive=False)["fused"] == 2
    assert [r.name for r in opt.pass_report.records] == ["toy_fuse", "eliminate_dead_code", "toy_plan"]
    assert opt.output_names == ["logits"] and opt.input_names == ["x"]
    x = models.feeds(m, {"N": 5})["x"]
    np.testing.assert_allclose(opt(x), ref(x), rtol=1e-5, atol=1e-6)
    for bad in (7, "2", True):
        with pytest.raises(CompileError, match="opt_level|-O7"):
            irgraph.compile(g, opt_level=bad)


# ---- the real -O2 pipeline, through ``python -m irgraph`` -----------------------------------------

def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "irgraph", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def resnet_path(tmp_path_factory):
    m = models.resnet(batch=1)
    p = tmp_path_factory.mktemp("real") / "resnet.onnx"
    onnx.save(m, p)
    return m, str(p)


def test_real_O2_show_stats_and_json(resnet_path):
    m, path = resnet_path
    r = _cli("show", path, "-O2", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    names = {p["name"] for p in s["passes"]}
    assert {"fuse_epilogues", "plan_memory"} <= names
    k = s["kernels"]
    assert k["count"] < k["before"] and k["fused"] > 0
    onnx_names = {n.name for n in m.graph.node}
    for grp in k["groups"]:
        assert grp["sources"] and set(grp["sources"]) <= onnx_names, grp
    covered = {src for grp in k["groups"] for src in grp["sources"]}
    # every activation follows a conv or a residual add, so each sits in some conv group
    assert set(_onnx_names(m, "Relu")) <= covered
    mem = s["memory"]
    assert mem is not None and all(isinstance(mem[key], int) and mem[key] > 0
                                   for key in ("peak_bytes", "naive_bytes", "lower_bound_bytes"))
    r = _cli("show", path, "-O2", "--stats", "--no-ir")
    assert r.returncode == 0, r.stderr
    assert f"kernels: {k['before']} before, {k['count']} after ({k['fused']} fused groups)" in r.stdout
    assert "peak arena" in r.stdout and "fuse_epilogues" in r.stdout


def test_real_O2_run_bisect_finds_nothing(resnet_path):
    r = _cli("run", resnet_path[1], "-O2", "--bisect-passes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no pass changed the outputs" in r.stdout
