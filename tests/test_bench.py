"""``irgraph bench`` and irgraph.bench: the JSON document, interleaved measuring, the output
check and the one-line errors. Never asserts on speed: only on structure and consistency."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import onnx
import pytest

import irgraph
import models
from irgraph import bench as B
from irgraph import cli
from irgraph.errors import CompileError, InputError
from irgraph.targets import _TARGETS, get_target, target_names

FAST = ["--repeat", "5", "--warmup", "1"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "irgraph", *args], capture_output=True, text=True, timeout=300)


def _main(capsys, *args):
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("bench") / "mlp.onnx"
    onnx.save(models.mlp(sizes=(8, 16, 4)), p)
    return str(p)


def _have_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
        return True
    except ImportError:
        return False


needs_ort = pytest.mark.skipif(not _have_onnxruntime(), reason="onnxruntime is not installed")


def _cpu_available() -> bool:
    try:
        get_target("cpu")
        return True
    except Exception:
        return False


# ---- the CLI's JSON document ----------------------------------------------------------------------

@needs_ort
def test_json_document_keys_types_and_ratio(mlp_path):
    r = _cli("bench", mlp_path, "--target", "interp", "--compare", "onnxruntime", "--threads", "1",
             "--dim", "N=3", "--json", *FAST)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["model"] == mlp_path and doc["target"] == "interp" and doc["opt_level"] == 0
    assert doc["threads"] == 1 and doc["dims"] == {"N": 3}
    assert doc["inputs"] == {"x": "float32[3,8]"}
    assert set(doc["runtimes"]) == {"irgraph", "onnxruntime"}
    for rt in doc["runtimes"].values():
        for k in ("median_ms", "p10_ms", "p90_ms"):
            assert isinstance(rt[k], float) and rt[k] > 0
        assert rt["p10_ms"] <= rt["median_ms"] <= rt["p90_ms"]
    ratio = doc["ratio_vs"]["onnxruntime"]
    assert ratio == pytest.approx(doc["runtimes"]["irgraph"]["median_ms"] / doc["runtimes"]["onnxruntime"]["median_ms"])
    assert isinstance(doc["compile_s"], float) and doc["compile_s"] >= doc["import_s"] >= 0
    assert doc["peak_arena_bytes"] is None          # interp at -O0 plans no arena
    assert isinstance(doc["max_abs_err"], float) and doc["max_abs_err"] < 1e-5
    assert doc["errors"]["onnxruntime"]["match"] is True and doc["outputs_match"] is True
    assert doc["repeat"] == 5 and doc["warmup"] == 1


@needs_ort
def test_text_table_names_both_runtimes_and_the_check(mlp_path, capsys):
    rc, out, err = _main(capsys, "bench", mlp_path, "--target", "interp", "--compare", "onnxruntime,numpy",
                         "--threads", "1", *FAST)
    assert rc == 0, err
    assert "irgraph (interp)" in out and "onnxruntime" in out and "numpy" in out
    assert "outputs vs onnxruntime: max abs err" in out and "(ok)" in out
    assert "5 interleaved repetitions" in out


def test_peak_arena_bytes_is_the_memory_plan_of_the_bound_shapes(mlp_path, capsys):
    rc, out, err = _main(capsys, "bench", mlp_path, "--target", "interp", "-O2", "--dim", "N=64",
                         "--json", *FAST)
    assert rc == 0, err
    doc = json.loads(out)
    from irgraph.passes.plan_memory import build_plan
    g = irgraph.compile(mlp_path, target="interp", opt_level=2).graph
    assert doc["opt_level"] == 2
    assert doc["peak_arena_bytes"] == build_plan(g, {"N": 64})["peak_bytes"]
    assert doc["peak_arena_bytes"] != build_plan(g, {"N": 1})["peak_bytes"]


@needs_ort
@pytest.mark.skipif(not _cpu_available(), reason="the cpu target is not available")
def test_cpu_target_gets_the_thread_count(mlp_path, capsys):
    rc, out, err = _main(capsys, "bench", mlp_path, "--target", "cpu", "--compare", "onnxruntime",
                         "--threads", "1", "--json", *FAST)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["target"] == "cpu" and doc["threads"] == 1
    assert not any("num_threads" in n for n in doc["notes"])   # it was passed to the target
    assert doc["outputs_match"] is True and isinstance(doc["peak_arena_bytes"], int)


# ---- errors -------------------------------------------------------------------------------------

def _one_line_error(rc, err, text, code=1):
    assert rc == code, err
    lines = [ln for ln in err.splitlines() if ln.startswith("irgraph: ")]
    assert len(lines) == 1 and text in lines[0], err


@pytest.mark.parametrize("args, text", [
    (["--compare", "tensorflow"], "unknown peer 'tensorflow'"),
    (["--compare", "onnxruntime,bogus"], "unknown peer 'bogus'"),
    (["--target", "interp", "--compare", "interp"], "that is the measured target itself"),
    (["--target", "nosuch"], "unknown target 'nosuch'"),
    (["--threads", "0"], "threads must be at least 1"),
    (["--repeat", "0"], "repeat must be at least 1"),
    (["--warmup", "-1"], "warmup must be 0 or more"),
    (["--dim", "N"], "--dim takes NAME=SIZE"),
    (["--dim", "batch=4"], "no model input has a dimension named 'batch'"),
])
def test_bad_options_are_one_line_errors(mlp_path, capsys, args, text):
    rc, out, err = _main(capsys, "bench", mlp_path, *FAST, *args)   # later flags win
    _one_line_error(rc, err, text)
    assert out == ""


def test_bad_flag_is_a_usage_error(mlp_path):
    r = _cli("bench", mlp_path, "--frobnicate")
    assert r.returncode == 2 and "unrecognized arguments: --frobnicate" in r.stderr
    r = _cli("bench", mlp_path, "--schedule", "fair")
    assert r.returncode == 2 and "invalid choice: 'fair'" in r.stderr


def test_invalid_and_missing_models(tmp_path, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\xfe not a protobuf at all \x00\x01")
    rc, _, err = _main(capsys, "bench", str(junk), "--target", "interp", *FAST)
    _one_line_error(rc, err, "not a valid ONNX model")
    rc, _, err = _main(capsys, "bench", str(tmp_path / "nope.onnx"), "--target", "interp", *FAST)
    _one_line_error(rc, err, "does not exist")


def test_onnxruntime_not_installed(mlp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # makes `import onnxruntime` fail
    rc, _, err = _main(capsys, "bench", mlp_path, "--target", "interp", "--compare", "onnxruntime", *FAST)
    _one_line_error(rc, err, "needs the onnxruntime package")


def _wrong_target(graph, **options):
    """interp with every float output off by 0.5, refusing num_threads as interp does."""
    if options:
        raise CompileError(f"target 'wrong' takes no options {sorted(options)}")
    run = _TARGETS["interp"](graph)
    return lambda inputs: [o + np.float32(0.5) for o in run(inputs)]


def test_wrong_outputs_fail_the_benchmark(mlp_path, capsys, monkeypatch):
    monkeypatch.setitem(_TARGETS, "wrong", _wrong_target)
    rc, out, err = _main(capsys, "bench", mlp_path, "--target", "wrong", "--compare", "numpy", "--json", *FAST)
    assert rc == 1
    doc = json.loads(out)      # the figures are still printed
    assert doc["outputs_match"] is False and doc["max_abs_err"] == pytest.approx(0.5)
    assert "irgraph's outputs differ from numpy's" in err
    assert any("takes no num_threads" in n for n in doc["notes"])   # compiled without it after all


# ---- measuring ----------------------------------------------------------------------------------

class _FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_measure_interleaves_round_robin_with_rotating_start():
    clock = _FakeClock()
    order = []
    cost = {"a": 0.001, "b": 0.002, "c": 0.004}

    def make(n):
        def call():
            order.append(n)
            clock.t += cost[n]
        return call
    times = B.measure({n: make(n) for n in "abc"}, repeat=4, warmup=1, clock=clock)
    assert "".join(order) == "abc" + "abc" "bca" "cab" "abc"
    assert {n: len(t) for n, t in times.items()} == {"a": 4, "b": 4, "c": 4}
    for n in "abc":
        assert times[n] == pytest.approx([cost[n]] * 4)


def test_measure_in_blocks_settles_warms_and_rotates():
    clock = _FakeClock()
    log = []
    cost = {"a": 0.001, "b": 0.002}

    def make(n):
        def call():
            log.append(n)
            clock.t += cost[n]
        return call

    def sleep(s):
        log.append(f"z{s:g}")
        clock.t += s
    times = B.measure({n: make(n) for n in "ab"}, repeat=5, schedule="blocks", block=2, settle_s=0.5,
                      clock=clock, sleep=sleep)

    def turn(n, k):
        return ["z0.5"] + [n] * (B.BLOCK_WARMUP + k)
    # rounds: a b | b a | a b ; the last turns take what is left of the 5 timed calls
    assert log == turn("a", 2) + turn("b", 2) + turn("b", 2) + turn("a", 2) + turn("a", 1) + turn("b", 1)
    assert {n: len(t) for n, t in times.items()} == {"a": 5, "b": 5}
    for n in "ab":                               # idle time and untimed calls are not in the times
        assert times[n] == pytest.approx([cost[n]] * 5)


def test_block_size_and_schedule_choice():
    assert B.block_size(40) == 8 and B.block_size(7) == 2 and B.block_size(1) == 1
    assert B.resolve_schedule("auto", 2) == "blocks"
    assert B.resolve_schedule("auto", 1) == "interleaved"
    assert B.resolve_schedule("auto", 4, runtimes=1) == "interleaved"
    assert B.resolve_schedule("blocks", 1) == "blocks"
    assert B.resolve_schedule("interleaved", 8) == "interleaved"
    with pytest.raises(InputError, match="unknown schedule 'fair'"):
        B.resolve_schedule("fair", 2)
    with pytest.raises(InputError, match="unknown schedule 'auto'"):
        B.measure({"a": lambda: None}, repeat=1, schedule="auto")


@needs_ort
def test_blocks_schedule_in_the_document_and_the_table(mlp_path, capsys):
    rc, out, err = _main(capsys, "bench", mlp_path, "--target", "interp", "--compare", "onnxruntime",
                         "--threads", "1", "--schedule", "blocks", "--json", "--repeat", "3", "--warmup", "0")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["schedule"] == "blocks" and doc["block"] == B.block_size(3) and doc["repeat"] == 3
    rc, out, err = _main(capsys, "bench", mlp_path, "--target", "interp", "--compare", "onnxruntime",
                         "--threads", "1", "--json", *FAST)
    assert rc == 0, err
    assert json.loads(out)["schedule"] == "interleaved" and json.loads(out)["block"] == 0
    rc, out, err = _main(capsys, "bench", mlp_path, "--target", "interp", "--compare", "numpy",
                         "--threads", "2", "--repeat", "2", "--warmup", "0")
    assert rc == 0, err
    assert f"2 timed calls per runtime in turns of 1 (each turn after {B.SETTLE_S:g} s idle" in out


def test_summarize_median_and_percentiles():
    s = B.summarize([x / 1e3 for x in range(10, 0, -1)])     # 10..1 ms, unordered
    assert s == pytest.approx({"median_ms": 5.5, "p10_ms": 1.9, "p90_ms": 9.1})
    with pytest.raises(InputError):
        B.measure({"a": lambda: None}, repeat=0)


def test_choose_repeat_fills_the_budget_within_bounds():
    assert B.choose_repeat(0.01, budget_s=1.0) == 100
    assert B.choose_repeat(10.0, budget_s=1.0) == B.MIN_REPEAT
    assert B.choose_repeat(1e-9, budget_s=1.0) == B.MAX_REPEAT


def test_error_summary():
    ref = [np.array([1.0, -4.0, 0.0], np.float32), np.array([[True, False]])]
    same = B.error_summary([r.copy() for r in ref], ref)
    assert same == {"max_abs_err": 0.0, "max_rel_err": 0.0, "match": True}
    off = B.error_summary([np.array([1.0, -4.01, 1e-6], np.float32), ref[1]], ref)
    assert off["max_abs_err"] == pytest.approx(0.01, rel=1e-3)
    assert off["max_rel_err"] == pytest.approx(0.01 / 4, rel=1e-3)      # relative to max |ref|
    assert off["match"] is False                                         # 1e-2 > 1e-5 + 1e-3 * 4
    assert B.error_summary([np.array([1.0, -4.01, 0.0])], [ref[0]], rtol=3e-3)["match"] is True
    nan_ref = np.array([np.nan, 1.0, np.inf])
    assert B.error_summary([nan_ref.copy()], [nan_ref])["match"] is True
    bad = B.error_summary([np.array([np.nan, 1.0, 1.0])], [nan_ref])
    assert math.isinf(bad["max_abs_err"]) and bad["match"] is False
    assert B.error_summary([np.zeros(3)], [np.zeros(4)])["match"] is False     # shapes differ
    assert B.error_summary([np.zeros(3)], [np.zeros(3), np.zeros(3)])["match"] is False


def test_blas_threads_restores_the_setting():
    fns = B._openblas_functions()
    if fns is None:
        pytest.skip("numpy does not use a bundled OpenBLAS")
    get, _ = fns
    before = get()
    with B.blas_threads(1) as ok:
        assert ok and get() == 1
    assert get() == before


# ---- the Python API -----------------------------------------------------------------------------

def test_bind_dims_fixes_inputs_and_outputs():
    proto = models.mlp(sizes=(8, 16, 4))
    bound, dims = B.bind_dims(proto, {"N": 5})
    assert dims == {"N": 5}
    shape = lambda vi: [d.dim_value if d.HasField("dim_value") else d.dim_param  # noqa: E731
                        for d in vi.type.tensor_type.shape.dim]
    assert shape(bound.graph.input[0]) == [5, 8] and shape(bound.graph.output[0]) == [5, 4]
    assert shape(proto.graph.input[0]) == ["N", 8]          # the original is left alone
    static, none = B.bind_dims(bound, None)
    assert static is bound and none == {}
    assert B.bind_dims(proto, None)[1] == {"N": 1}
    with pytest.raises(InputError, match="no model input has a dimension named 'M'"):
        B.bind_dims(proto, {"M": 2})


def test_bench_a_graph_against_the_reference():
    g = irgraph.to_graph(models.mlp(sizes=(8, 16, 4)))
    r = B.bench(g, "interp", compare="numpy", threads=1, opt_level=2, dims={"N": 2}, warmup=0, repeat=3)
    assert r.outputs_match and r.errors["numpy"]["max_abs_err"] < 1e-5
    assert r.inputs == {"x": "float32[2,8]"} and r.import_s == 0.0
    assert r.to_dict()["ratio_vs"]["numpy"] == pytest.approx(
        r.runtimes["irgraph"]["median_ms"] / r.runtimes["numpy"]["median_ms"])
    with pytest.raises(InputError, match="onnxruntime peer needs an ONNX model"):
        B.bench(g, "interp", compare="onnxruntime", threads=1, repeat=1)


def test_parse_peers():
    assert B.parse_peers(["onnxruntime,numpy", "numpy"]) == ["onnxruntime", "numpy"]
    assert B.parse_peers(None) == []
    assert "interp" in target_names() and B.parse_peers("interp") == ["interp"]
    with pytest.raises(InputError, match="unknown peer"):
        B.parse_peers("torch")
