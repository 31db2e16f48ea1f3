"""Every ONNX node case the CPU backend passes, on the CUDA emulator: the kernels the ``cuda``
targets would generate (same -O2 pipeline, same specialization on dims and small input values),
run under forward, reverse and shuffled schedules and compared with the case's expected outputs
at the case's own tolerances. Cases the CUDA backend cannot do are strict xfails listed with
their reasons in ``cuda_expected_failures.py``.

All programs share one emulator build (``node_coverage.py``: identical kernels deduplicated,
eight translation units, cached on disk): about 20 s cold for the build, 30 s to print the
programs and run them."""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import node_coverage as cov  # noqa: E402
from cudacheck import SCHEDULES  # noqa: E402
from cuda_expected_failures import CUDA_EXPECTED_FAILURES  # noqa: E402
from node_cases import compare  # noqa: E402

from irgraph.backends.cuda.runtime_emu import EmuExecutor  # noqa: E402
from irgraph.frontends.onnx.backend import _to_numpy  # noqa: E402

CASES = cov.cpu_passing(cov.all_cases())


def _marks(name: str):
    reason = CUDA_EXPECTED_FAILURES.get(name)
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


PARAMS = [pytest.param(c, id=c.name, marks=_marks(c.name)) for c in CASES]


def test_cuda_expected_failures_name_cpu_passing_cases_with_reasons():
    names = {c.name for c in CASES}
    stale = sorted(set(CUDA_EXPECTED_FAILURES) - names)
    assert not stale, f"listed as CUDA expected failures but not CPU-passing node cases: {stale}"
    assert all(isinstance(r, str) and r.strip() for r in CUDA_EXPECTED_FAILURES.values())


def test_coverage_is_every_cpu_passing_case():
    """The selection is the whole CPU-passing set, not a sample (1,761 with onnx 1.20)."""
    cases, programs, errors, batch = cov.planned()
    assert len(cases) == len(CASES) > 1500
    assert len(programs) + len(errors) == len(cases)
    assert set(errors) <= set(CUDA_EXPECTED_FAILURES), sorted(set(errors) - set(CUDA_EXPECTED_FAILURES))[:10]
    assert batch.unique < batch.launches   # duplicates compiled once


@pytest.mark.parametrize("case", PARAMS)
def test_node_case_on_emulator(case):
    _, programs, errors, _ = cov.planned()
    if case.name in errors:
        raise errors[case.name]
    mod = cov.emulator_module()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for prog, (inputs, outputs) in zip(programs[case.name], case.data_sets):
            ex = EmuExecutor(prog, module=mod)
            ins = _to_numpy(list(inputs))
            for order, seed in SCHEDULES:
                compare(case, outputs, ex.run(ins, order=order, seed=seed))
