"""Weight storage formats as declared data: frozen descriptors with pack / unpack.

INT8_PANELS is the layout the int8 GEMM microkernels read (csrc/gemm_int8_frame.inc):
panels of NR = 64 output columns; inside a panel, K runs in quads of 4 and each quad holds
the 4 K values of one column contiguously:

    data[p, q, j, r] = W[4q + r, 64p + j]      zero where 4q + r >= K or 64p + j >= N

so one 64-byte load gives 16 columns x 4 K values, the operand of one vpdpbusd.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ALIGN = 64  # bytes; packed data starts on a cache line (and a zmm load boundary)


def aligned_empty(shape: tuple[int, ...], dtype, align: int = ALIGN) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts on an ``align``-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


@dataclass(frozen=True)
class Int8Panels:
    """int8 weights in 64-column panels with K quads (see the module docstring)."""

    name: str = "int8"
    bits: int = 8
    nr: int = 64       # output columns per panel
    k_block: int = 4   # K values per column per quad

    def packed_shape(self, k: int, n: int) -> tuple[int, int, int, int]:
        return (-(-n // self.nr), -(-k // self.k_block), self.nr, self.k_block)

    def nbytes(self, k: int, n: int) -> int:
        """Bytes of the packed weights of a K x N matrix (padding included)."""
        return math.prod(self.packed_shape(k, n))

    def pack(self, w_kn: np.ndarray) -> np.ndarray:
        """Pack an int8 [K, N] matrix; returns a 64-byte-aligned int8 array."""
        k, n = w_kn.shape
        n_panels, kq, nr, kb = self.packed_shape(k, n)
        padded = np.zeros((kq * kb, n_panels * nr), dtype=np.int8)
        padded[:k, :n] = w_kn
        out = aligned_empty((n_panels, kq, nr, kb), np.int8)
        # [q, r, p, j] -> [p, q, j, r]
        out[...] = padded.reshape(kq, kb, n_panels, nr).transpose(2, 0, 3, 1)
        return out

    def unpack(self, data: np.ndarray, k: int, n: int) -> np.ndarray:
        """The int8 [K, N] matrix that ``pack`` packed into ``data``."""
        n_panels, kq, nr, kb = self.packed_shape(k, n)
        kn = data.reshape(n_panels, kq, nr, kb).transpose(1, 3, 0, 2)
        return np.ascontiguousarray(kn.reshape(kq * kb, n_panels * nr)[:k, :n])


INT8_PANELS = Int8Panels()
FORMATS = {INT8_PANELS.name: INT8_PANELS}


@dataclass(frozen=True, eq=False)
class PackedWeights:
    """Weights packed once for a kernel and reused across calls (``pack_weights``)."""

    fmt: Int8Panels
    k: int
    n: int
    data: np.ndarray = field(repr=False)
    col_sum: np.ndarray = field(repr=False)  # int32 [N]: sum_k W[k, j] (zero-point corrections)
    col_abs_sum_max: int = 0                 # max_j sum_k |W[k, j]| (accumulator-overflow guard)

    def __post_init__(self) -> None:
        # Checked once here, so kernels can trust every PackedWeights they are handed.
        d = self.data
        if (not isinstance(d, np.ndarray) or d.dtype != np.int8 or not d.flags.c_contiguous
                or d.size != self.fmt.nbytes(self.k, self.n)):
            raise ValueError(f"w.data: not a packed int8 buffer of {self.fmt.nbytes(self.k, self.n)} "
                             f"bytes for K={self.k}, N={self.n}; use pack_weights")
        if d.ctypes.data % ALIGN:
            raise ValueError(f"w.data: must be {ALIGN}-byte aligned; use pack_weights")
        cs = self.col_sum
        if (not isinstance(cs, np.ndarray) or cs.dtype != np.int32 or cs.shape != (self.n,)
                or not cs.flags.c_contiguous):
            raise ValueError(f"w.col_sum: must be a contiguous int32 [{self.n}] vector; "
                             f"use pack_weights")

    @property
    def shape(self) -> tuple[int, int]:
        """Logical (K, N) of the packed matrix."""
        return (self.k, self.n)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def unpack(self) -> np.ndarray:
        return self.fmt.unpack(self.data, self.k, self.n)


def pack_weights(w: np.ndarray, fmt: str = "int8", *, layout: str = "kn") -> PackedWeights:
    """Pack a weight matrix once into the layout the kernels of ``fmt`` read.

    Args:
        w: int8 weights, [K, N] with ``layout="kn"`` (``y = x @ w``) or [N, K] with
            ``layout="nk"`` (torch ``nn.Linear.weight``).
        fmt: storage format name; one of ``lowbit.kernels.formats.FORMATS``.
        layout: "kn" or "nk", as above.

    Example:
        >>> wp = pack_weights(np.ones((256, 128), np.int8))
        >>> wp.shape
        (256, 128)
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt: unknown weight format {fmt!r}; known: {', '.join(FORMATS)}")
    if layout not in ("kn", "nk"):
        raise ValueError(f"layout: must be 'kn' ([K, N]) or 'nk' ([N, K]), got {layout!r}")
    if not isinstance(w, np.ndarray):
        raise TypeError(f"w: expected a numpy.ndarray, got {type(w).__name__}")
    if w.dtype != np.int8:
        raise TypeError(f"w: {fmt} weights must have dtype int8, got {w.dtype}")
    if w.ndim != 2:
        raise ValueError(f"w: expected a 2-D matrix, got shape {w.shape}")
    w_kn = w if layout == "kn" else w.T
    k, n = w_kn.shape
    if k < 1 or n < 1:
        raise ValueError(f"w: K and N must be at least 1, got K={k}, N={n}")
    spec = FORMATS[fmt]
    wide = w_kn.astype(np.int64)
    return PackedWeights(
        fmt=spec, k=k, n=n, data=spec.pack(w_kn),
        col_sum=np.ascontiguousarray(wide.sum(axis=0).astype(np.int32)),
        col_abs_sum_max=int(np.abs(wide).sum(axis=0).max()),
    )
