"""lowbit.kernels: native low-bit kernels, their NumPy references, and the registry.

    >>> import numpy as np
    >>> from lowbit.kernels import pack_weights, gemm_int8
    >>> w = pack_weights(np.ones((64, 32), np.int8))        # [K, N], packed once
    >>> gemm_int8(np.ones((2, 64), np.int8), w).shape      # int32 [M, N]
    (2, 32)
    >>> from lowbit.kernels import gemm_binary, pack_binary_activations
    >>> wb = pack_weights(np.ones((100, 3)), "binary")      # +-1 signs [K, N], bit-packed
    >>> gemm_binary(pack_binary_activations(np.ones((2, 100))), wb, 100)  # K - 2 popcount
    array([[100, 100, 100],
           [100, 100, 100]], dtype=int32)
    >>> from lowbit.kernels import gemm_w4a16, gemm_w4a8
    >>> w4 = pack_weights(np.full((64, 8), 7.0), "int4", group_size=32)  # quantized
    >>> print(gemm_w4a16(np.ones((1, 64), np.float32), w4)[0, 0])      # float32
    448.0
    >>> from lowbit.kernels import pack_csr, spmm_csr
    >>> wc = pack_csr(np.array([[0, 2], [3, 0]], np.int8))    # CSR [N_out, K]
    >>> spmm_csr(wc, np.ones((2, 3), np.int8))                # int32 [N_out, B] = W @ x
    array([[2, 2, 2],
           [3, 3, 3]], dtype=int32)
"""
from .epilogue import Dequantize, Requantize, quantize_multiplier
from .formats import (FORMATS, PackedBinaryWeights, PackedInt4Weights, PackedWeights,
                      pack_binary_activations, pack_weights)
from .format_csr import PackedCsrWeights, pack_csr
from .format_sparse24 import PackedSparse24Weights, prune_24
from .gemm_binary import gemm_binary
from .gemm_int4 import gemm_w4a8, gemm_w4a16
from .gemm_int8 import gemm_int8, max_safe_k
from .gemm_sparse24 import gemm_sparse24
from .native import cpu_features, num_threads, set_num_threads
from .registry import ISA_RANK, REGISTRY, Kernel, KernelKey
from .spmm_csr import spmm_csr


_TORCH_MODULES = ("LowbitConv2d", "LowbitLinear")  # lowbit.kernels.modules; needs torch


def __getattr__(name: str):
    # torch-backed names load on first use, so ``import lowbit.kernels`` stays torch-free
    if name in _TORCH_MODULES:
        from . import modules

        return getattr(modules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dispatch_info() -> dict:
    """Per operation: ``{"selected": isa, "available": [isa, ...]}`` on this machine."""
    return REGISTRY.dispatch_info()


__all__ = [
    "Dequantize", "FORMATS", "ISA_RANK", "Kernel", "KernelKey", "PackedBinaryWeights",
    "PackedInt4Weights", "PackedWeights", "REGISTRY", "Requantize", "cpu_features",
    "dispatch_info", "gemm_binary", "gemm_int8", "gemm_w4a16", "gemm_w4a8", "max_safe_k",
    "num_threads", "pack_binary_activations", "pack_weights", "quantize_multiplier",
    "set_num_threads",
    "PackedCsrWeights", "pack_csr", "spmm_csr",
    "PackedSparse24Weights", "gemm_sparse24", "prune_24",
]
