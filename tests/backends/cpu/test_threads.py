"""The thread pool of backends/cpu/threads.py, launched from generated code: every part runs
exactly once, the slices of ``split_range`` cover the range exactly once, ``launch`` runs serially
for one part, regions started from two Python threads at once or from inside a part run too (on
their caller), and workers asleep after an idle spell wake up for the next region."""
from __future__ import annotations

import ctypes

import llvmlite.ir as ir
import numpy as np
import pytest

from irgraph.backends.cpu import cache as object_cache
from irgraph.backends.cpu import threads
from irgraph.backends.cpu.threads import I64, PTR, VOID



@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """``void fill(ptr owner, ptr seen, i64 n, i64 align, i64 nthreads)``: each thread writes its
    id into owner[i] for its slice of [0, n), and sets seen[tid] = its nthreads."""
    mod = ir.Module("threads_test")
    worker = ir.Function(mod, threads.WORKER_TYPE, "fill.worker")
    worker.linkage = "internal"
    tid, nth, ctx = worker.args
    b = ir.IRBuilder(worker.append_basic_block("entry"))
    owner = threads.load_ctx(b, ctx, 0, PTR)
    seen = threads.load_ctx(b, ctx, 1, PTR)
    n = threads.load_ctx(b, ctx, 2)
    align = threads.load_ctx(b, ctx, 3)
    b.store(nth, b.gep(seen, [tid], source_etype=I64))
    # split_range takes a compile-time alignment: dispatch on the runtime value for the test
    done = worker.append_basic_block("done")
    sw = b.switch(align, done)
    for al in (1, 4, 32):
        blk = worker.append_basic_block(f"al{al}")
        sw.add_case(I64(al), blk)
        b.position_at_end(blk)
        lo, hi = threads.split_range(b, n, tid, nth, al)
        head = worker.append_basic_block(f"h{al}")
        body = worker.append_basic_block(f"b{al}")
        pre = b.block
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64)
        i.add_incoming(lo, pre)
        b.cbranch(b.icmp_signed("<", i, hi), body, done)
        b.position_at_end(body)
        p = b.gep(owner, [i], source_etype=I64)
        b.store(b.add(b.load(p, typ=I64), b.add(tid, I64(1))), p)   # += tid + 1: catches overlap
        i.add_incoming(b.add(i, I64(1)), b.block)
        b.branch(head)
    b.position_at_end(done)
    b.ret_void()

    fn = ir.Function(mod, ir.FunctionType(VOID, [PTR, PTR, I64, I64, I64]), "fill")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ctx = threads.store_ctx(b, list(fn.args[:4]))
    threads.launch(b, threads.emit_trampoline(mod, worker), worker, ctx, fn.args[4])
    b.ret_void()
    # fill_parts(owner, seen, n, align, nthreads, parts): more (or fewer) parts than threads
    fp = ir.Function(mod, ir.FunctionType(VOID, [PTR, PTR, I64, I64, I64, I64]), "fill_parts")
    b = ir.IRBuilder(fp.append_basic_block("entry"))
    ctx = threads.store_ctx(b, list(fp.args[:4]))
    threads.launch(b, None, worker, ctx, fp.args[4], parts=fp.args[5])
    b.ret_void()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IRGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        lib = object_cache.compile_cached(str(mod))
    f = lib.cfunc("fill", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                  ctypes.c_int64)
    f.parts = lib.cfunc("fill_parts", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
    return f


def run(fill, n, align, nth):
    owner = np.zeros(max(n, 1), np.int64)
    seen = np.full(8, -1, np.int64)
    fill(owner.ctypes.data, seen.ctypes.data, n, align, nth)
    return owner[:n], seen


@pytest.mark.parametrize("n", [0, 1, 5, 31, 32, 33, 100, 1000])
@pytest.mark.parametrize("align", [1, 4, 32])
@pytest.mark.parametrize("nth", [1, 2, 3])
def test_split_range_covers_each_index_once(lib, n, align, nth):
    owner, seen = run(lib, n, align, nth)
    assert np.all(owner >= 1) and np.all(owner <= nth), "an index was skipped or written twice"
    # slices are contiguous, in thread order, and start on a multiple of align
    assert np.all(np.diff(owner) >= 0)
    for t in range(1, nth + 1):
        idx = np.flatnonzero(owner == t)
        if idx.size:
            assert idx[0] % align == 0
            assert idx[-1] - idx[0] + 1 == idx.size


def test_every_thread_runs(lib):
    _, seen = run(lib, 100, 1, 2)
    assert list(seen[:2]) == [2, 2] and np.all(seen[2:] == -1)
    _, seen = run(lib, 100, 1, 1)
    assert seen[0] == 1 and np.all(seen[1:] == -1)      # serial: the caller is thread 0
    _, seen = run(lib, 100, 1, 0)
    assert seen[0] == 1 and np.all(seen[1:] == -1)      # nthreads <= 1 never enters the pool


def test_regions_are_cheap_enough_to_call_often(lib):
    """Many back-to-back regions (what a model's entry function does) all complete correctly."""
    owner = np.zeros(64, np.int64)
    seen = np.full(8, -1, np.int64)
    for _ in range(300):
        lib(owner.ctypes.data, seen.ctypes.data, 64, 32, 2)
    assert owner[:32].sum() == 300 * 32 and owner[32:].sum() == 2 * 300 * 32


def test_default_num_threads_is_the_affinity_mask():
    import os
    n = threads.default_num_threads()
    assert n >= 1
    if hasattr(os, "sched_getaffinity"):
        assert n == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("parts", [2, 3, 8])
def test_more_parts_than_cores_each_run_once(lib, parts):
    owner, seen = run(lib, 1000, 4, parts)
    assert list(seen[:parts]) == [parts] * parts
    assert np.all(owner >= 1) and np.all(owner <= parts)


def test_regions_from_two_python_threads_at_once(lib):
    """One region runs on the pool at a time; the other runs all its parts on its caller."""
    import threading
    errors = []

    def hammer():
        for _ in range(200):
            owner, seen = run(lib, 257, 1, 2)
            if not (np.all(owner >= 1) and np.all(owner <= 2) and list(seen[:2]) == [2, 2]):
                errors.append((owner, seen))
    ts = [threading.Thread(target=hammer) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_workers_wake_after_sleeping(lib):
    import time
    for _ in range(3):
        time.sleep(0.05)     # longer than the workers spin: they wait on the futex
        owner, seen = run(lib, 100, 1, 2)
        assert list(seen[:2]) == [2, 2] and np.all((owner >= 1) & (owner <= 2))


def test_a_region_inside_a_part_runs_on_its_caller(tmp_path, monkeypatch):
    """A part that launches a region (the pool is busy with the outer one) still gets every inner
    part run: the nested region falls back to its caller."""
    mod = ir.Module("nested")
    inner = ir.Function(mod, threads.WORKER_TYPE, "inner")
    inner.linkage = "internal"
    b = ir.IRBuilder(inner.append_basic_block("entry"))
    i, n, ctx = inner.args
    cnt = threads.load_ctx(b, ctx, 0, PTR)
    b.atomic_rmw("add", b.gep(cnt, [i], source_etype=I64), I64(1), "seq_cst")
    b.ret_void()
    outer = ir.Function(mod, threads.WORKER_TYPE, "outer")
    outer.linkage = "internal"
    b = ir.IRBuilder(outer.append_basic_block("entry"))
    i, n, ctx = outer.args
    cnt = threads.load_ctx(b, ctx, 0, PTR)
    inner_ctx = threads.store_ctx(b, [b.gep(cnt, [b.mul(i, I64(4))], source_etype=I64)])
    threads.launch(b, None, inner, inner_ctx, I64(4))
    b.ret_void()
    fn = ir.Function(mod, ir.FunctionType(VOID, [PTR]), "nest")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    threads.launch(b, None, outer, threads.store_ctx(b, [fn.args[0]]), I64(3))
    b.ret_void()
    monkeypatch.setenv("IRGRAPH_CACHE_DIR", str(tmp_path))
    f = object_cache.compile_cached(str(mod)).cfunc("nest", None, ctypes.c_void_p)
    for _ in range(50):
        counts = np.zeros(12, np.int64)
        f(counts.ctypes.data)
        assert np.all(counts == 1)


@pytest.mark.parametrize("nth,parts", [(2, 8), (1, 5), (2, 1), (3, 7)])
def test_more_parts_than_threads(lib, nth, parts):
    """Parts are claimed by at most nth threads; each runs once, also all of them serially."""
    owner = np.zeros(1000, np.int64)
    seen = np.full(8, -1, np.int64)
    lib.parts(owner.ctypes.data, seen.ctypes.data, 1000, 4, nth, parts)
    assert list(seen[:parts]) == [parts] * parts and np.all(seen[parts:] == -1)
    assert np.all(owner >= 1) and np.all(owner <= parts) and np.all(np.diff(owner) >= 0)
