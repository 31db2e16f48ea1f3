"""data_ptr: the address numpy reports for every kind of array, read without ``.ctypes``."""
from __future__ import annotations

import platform

import numpy as np
import pytest

from irgraph.backends.cpu import pointers


def _arrays():
    base = np.arange(60, dtype=np.float64).reshape(3, 4, 5)
    yield base
    yield base[1:, ::2, 3:]
    yield base.transpose(2, 0, 1)
    yield np.asfortranarray(base)
    yield np.empty(0, np.float32)
    yield np.zeros((), np.int8)
    yield np.frombuffer(bytearray(16), np.uint8)[4:]
    yield base.reshape(60)[7:]

    class Sub(np.ndarray):
        pass
    yield base.view(Sub)


@pytest.mark.parametrize("i", range(9))
def test_data_ptr_is_numpys_address(i):
    a = list(_arrays())[i]
    assert pointers.data_ptr(a) == a.ctypes.data
    assert pointers._slow(a) == a.ctypes.data


@pytest.mark.skipif(platform.python_implementation() != "CPython", reason="the fast read is CPython's")
def test_the_fast_read_is_in_use_on_cpython():
    assert pointers._layout_holds() and pointers.data_ptr is pointers._fast
