"""The CPU backend: kernels lowered to LLVM IR through llvmlite, compiled for the host CPU."""
