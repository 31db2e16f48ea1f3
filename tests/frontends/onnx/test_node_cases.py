"""Every ONNX node test case shipped in the ``onnx`` package, run through the onnx.backend adapter
on the interpreter and compared with the case's own rtol/atol.

Cases in ``expected_failures.EXPECTED_FAILURES`` are strict xfails, each with its reason, so a
case that starts passing without being removed from the list is reported.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from expected_failures import EXPECTED_FAILURES
from node_cases import load_cases, run_case

CASES = load_cases()
NAMES = [c.name for c in CASES]
PARAMS = [pytest.param(c, id=c.name,
                       marks=[pytest.mark.xfail(strict=True, reason=EXPECTED_FAILURES[c.name])]
                       if c.name in EXPECTED_FAILURES else [])
          for c in CASES]


def test_case_count_and_pass_target():
    # onnx ships ~1,900 node cases; irgraph must pass at least 1,500 of them
    assert len(CASES) >= 1800
    expected_pass = sum(1 for n in NAMES if n not in EXPECTED_FAILURES)
    assert expected_pass >= 1500, expected_pass


def test_expected_failures_name_real_cases():
    stale = sorted(set(EXPECTED_FAILURES) - set(NAMES))
    assert not stale, f"listed as expected failures but not shipped by onnx: {stale}"
    assert all(reason.strip() for reason in EXPECTED_FAILURES.values())


@pytest.mark.parametrize("case", PARAMS)
def test_node_case(case):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        run_case(case, "interp")
