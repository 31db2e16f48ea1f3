"""The CUDA backend: kernel IR -> CUDA C (``printer.py``), nvcc to cubin/PTX (``nvcc.py``), the CPU
emulator (``emulator.py``) and PyCUDA runtime (``runtime_pycuda.py``); targets ``cuda`` and
``cuda-emulator`` (``target.py``). Importing this package imports nothing heavy."""
