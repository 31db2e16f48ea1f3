"""The pass manager: contracts, records, verification, instruments, errors named by pass."""
from __future__ import annotations

import pytest

from irgraph import Graph, TensorType
from irgraph.dtype import float32
from irgraph.errors import CompileError
from irgraph.passes import PassContext, all_passes, pipeline, run_passes
from irgraph.passes.instruments import DumpIR
from irgraph.passes.pipelines import PIPELINES
from irgraph.passes.registry import Pass


def _dead_graph():
    g = Graph()
    x = g.add_input("x", TensorType((4,), float32))
    g.op("exp", [x], name="unused")
    g.set_outputs([g.op("relu", [x], name="r")])
    return g


def test_records_and_table():
    g, report = run_passes(_dead_graph(), ["eliminate_dead_code"], PassContext(verify=True))
    (rec,) = report.records
    assert rec.name == "eliminate_dead_code" and rec.changed
    assert (rec.nodes_before, rec.nodes_after) == (2, 1)
    assert rec.ops_removed == {"exp": 1} and rec.ops_added == {}
    assert report.kernels_before == 2 and report.kernels_after == 1
    table = report.table()
    assert "eliminate_dead_code" in table and "2 → 1" in table and "-exp×1" in table


def test_disabled_passes_are_skipped():
    g, report = run_passes(_dead_graph(), ["eliminate_dead_code"], PassContext(disabled={"eliminate_dead_code"}))
    assert report.records == [] and len(g.nodes) == 2


def test_contracts_are_checked_before_running():
    needs = Pass("needs_shapes", lambda g, c: False, requires=frozenset({"shapes_inferred"}))
    with pytest.raises(CompileError, match="requires \\['shapes_inferred'\\]"):
        run_passes(_dead_graph(), [needs])


def test_errors_name_the_pass_and_verification_catches_breakage():
    def broken(g, ctx):
        g.nodes.reverse()  # use before definition
        return True
    chain = Graph()
    x = chain.add_input("x", TensorType((4,), float32))
    chain.set_outputs([chain.op("relu", [chain.op("exp", [x])])])
    with pytest.raises(CompileError, match="invalid after pass 'broken'"):
        run_passes(chain, [Pass("broken", broken)], PassContext(verify=True))

    def crash(g, ctx):
        raise ZeroDivisionError("oops")
    with pytest.raises(CompileError, match="pass 'crash' failed: ZeroDivisionError"):
        run_passes(_dead_graph(), [Pass("crash", crash)])


def test_dump_ir_writes_text_and_onnx(tmp_path):
    dump = DumpIR(str(tmp_path), passes={"eliminate_dead_code"})
    run_passes(_dead_graph(), ["eliminate_dead_code"], PassContext(instruments=[dump]))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["01_eliminate_dead_code.onnx", "01_eliminate_dead_code.txt"]
    assert "relu" in (tmp_path / "01_eliminate_dead_code.txt").read_text()


def test_pipelines_name_registered_passes_in_level_order():
    known = all_passes()
    for level, names in PIPELINES.items():
        missing = [n for n in names if n not in known]
        assert not missing, f"-O{level} names unregistered passes {missing}"
    assert pipeline(0) == []
    assert set(pipeline(1)) <= set(pipeline(2))
    with pytest.raises(CompileError, match="-O7"):
        pipeline(7)


def test_optimizing_keeps_the_output_names():
    import numpy as np
    from irgraph import Graph, TensorType, run_graph
    from irgraph.passes import optimize
    g = Graph()
    x = g.add_input("x", TensorType((2, 3), "float32"))
    one = g.add_const(np.ones((), np.float32), "one")
    y = g.op("mul", [x, one], name="y")                        # becomes x itself
    z = g.op("add", [g.op("mul", [x, x], name="sq"), g.add_const(np.zeros((), np.float32))], name="z")
    g.set_outputs([y, z])
    out, _ = optimize(g, 2)
    assert [v.name for v in out.outputs] == ["y", "z"]
    out.verify()
    xv = np.arange(6, dtype=np.float32).reshape(2, 3)
    for a, b in zip(run_graph(out, [xv]), run_graph(g, [xv])):
        np.testing.assert_array_equal(a, b)
