"""lowbit: low-bit neural-network kernels, compression, accelerator simulation, rooflines.

Subpackages: ``lowbit.kernels`` (native int8 GEMM and its references), ``lowbit.bench``
(pytest-benchmark suites), ``lowbit.cli`` (the ``lowbit`` command). ``lowbit.compress``,
``lowbit.simulator`` and ``lowbit.roofline`` are reserved and still empty.
"""
__version__ = "0.1.0"
