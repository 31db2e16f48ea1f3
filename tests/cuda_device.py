"""Whether this machine has a CUDA device PyCUDA can open (the ``gpu`` marker and the tests that
check the no-device error both ask)."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def have_gpu() -> bool:
    try:
        import pycuda.driver as drv  # type: ignore
        drv.init()
        return drv.Device.count() > 0
    except Exception:
        return False
