"""irgraph (cpu) against onnxruntime at several thread counts, interleaved in one process, with
onnxruntime's idle spinning on or off.

    python benchmarks/compare_threads.py MODEL.onnx [--threads 1,2] [--repeat 40] [--no-ort-spin]

Why the switch: after each run onnxruntime's thread pool spins for ~40 ms (measured: 46 ms of
CPU in the second after a ResNet-18 call). On a 2-core machine an interleaved comparison at 2
threads then runs the *next* runtime's call with one core taken by that spinner: ResNet-18 on
irgraph measured 21.2 ms right after an onnxruntime call against 9.5 ms with onnxruntime's
``session.intra_op.allow_spinning`` off (and onnxruntime itself 12.5 vs 11.7 ms). ``irgraph
bench`` keeps onnxruntime's defaults and, at N > 1 threads, times each runtime in blocks of
calls after idle time instead (``irgraph.bench.measure``); this script shows what interleaving
does with either setting. Inputs are seeded random arrays.
"""
from __future__ import annotations

import argparse
import statistics
import sys


def run(path: str, threads: int, repeat: int, ort_spin: bool) -> tuple[float, float]:
    import onnxruntime as ort

    import irgraph
    from irgraph.bench import measure
    from irgraph.random_inputs import random_inputs
    m = irgraph.compile(path, target="cpu", num_threads=threads)
    feeds = random_inputs(dict(zip(m.input_names, m.input_types)), seed=0)
    arrays = [feeds[n] for n in m.input_names]
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if ort_spin else "0")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    ort_feeds = {i.name: feeds[i.name] for i in sess.get_inputs()}
    times = measure({"irgraph": lambda: m.run(*arrays), "onnxruntime": lambda: sess.run(None, ort_feeds)},
                    repeat, warmup=3)
    return statistics.median(times["irgraph"]) * 1e3, statistics.median(times["onnxruntime"]) * 1e3


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--no-ort-spin", action="store_true", help="only onnxruntime without spinning")
    a = ap.parse_args(argv)
    spins = (False,) if a.no_ort_spin else (True, False)
    for t in (int(v) for v in a.threads.split(",")):
        for spin in spins:
            ours, theirs = run(a.model, t, a.repeat, spin)
            print(f"{a.model}  threads {t}  ort spinning {'on ' if spin else 'off'}  irgraph {ours:8.3f} ms  "
                  f"onnxruntime {theirs:8.3f} ms  ratio {ours / theirs:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
