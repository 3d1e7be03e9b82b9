"""Weight storage formats as declared data: frozen descriptors with pack / unpack.

INT8_PANELS is the layout the int8 GEMM microkernels read (csrc/gemm_int8_frame.inc):
panels of NR = 64 output columns; inside a panel, K runs in quads of 4 and each quad holds
the 4 K values of one column contiguously:

    data[p, q, j, r] = W[4q + r, 64p + j]      zero where 4q + r >= K or 64p + j >= N

so one 64-byte load gives 16 columns x 4 K values, the operand of one vpdpbusd.

BINARY_PANELS is the layout the binary GEMM microkernels read (csrc/gemm_binary_frame.inc):
+-1 values bit-packed along K into uint64 words, bit b of word q holding K index 64q + b
(least significant bit first), bit 1 = +1 and bit 0 = -1; ``pack_bits`` maps x >= 0 to +1
and x < 0 to -1. The bits of the last word past K are padding: always 0 in packed weights
(PackedBinaryWeights checks), any value in activations (the kernels subtract their per-row
count), so they never change a result. Activations
are plain rows of words, ``pack_binary_activations(x)`` -> uint64 [M, ceil(K/64)]; weights
are panels of NR = 32 output columns, each K word of the panel's 32 columns contiguous:

    data[p, q, j] = word q of weight column 32p + j            zero where 32p + j >= N

so one 64-byte load gives 8 columns' word q, the operand of one vpxorq / vpopcntq.
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


def _as_signs(name: str, x) -> np.ndarray:
    """A 2-D numeric array whose signs are to be bit-packed (checked; not copied)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(x).__name__}")
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer)
                                   or np.issubdtype(x.dtype, np.floating)):
        raise TypeError(f"{name}: expected an integer or float array of signs "
                        f"(>= 0 is +1, < 0 is -1), got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {x.shape}")
    if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
        raise ValueError(f"{name}: contains NaN, which has no sign")
    return x


def binary_words(k: int) -> int:
    """uint64 words per row of K bit-packed values: ceil(K / 64)."""
    return -(-k // 64)


def tail_mask(k: int) -> int:
    """The valid bits of the last word of a K-bit row (all ones when 64 divides K)."""
    return (1 << (k % 64)) - 1 if k % 64 else (1 << 64) - 1


def pack_bits(x: np.ndarray) -> np.ndarray:
    """Bit-pack the signs of each row of a 2-D array: uint64 [R, ceil(K/64)], C-contiguous.

    x >= 0 -> bit 1 (+1), x < 0 -> bit 0 (-1); bit b of word q is column 64q + b; padding
    bits past K are 0. No argument checks: see ``pack_binary_activations``.
    """
    r, k = x.shape
    kw = binary_words(k)
    signs = np.zeros((r, kw * 64), dtype=bool)
    signs[:, :k] = x >= 0
    packed = np.packbits(signs, axis=1, bitorder="little")  # byte 8q + t holds bits 8t..8t+7
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False)


def unpack_bits(bits: np.ndarray, k: int) -> np.ndarray:
    """The +-1 int8 [R, K] matrix whose signs ``pack_bits`` packed (padding bits ignored)."""
    r = bits.shape[0]
    as_bytes = np.ascontiguousarray(bits.astype("<u8", copy=False)).view(np.uint8)
    signs = np.unpackbits(as_bytes.reshape(r, -1), axis=1, bitorder="little")[:, :k]
    return (signs.astype(np.int8) * 2 - 1).astype(np.int8)


@dataclass(frozen=True)
class BinaryPanels:
    """+-1 weights bit-packed along K, in panels of 32 output columns (module docstring)."""

    name: str = "binary"
    bits: int = 1
    nr: int = 32            # output columns per panel (LB_B_NR in csrc/lowbit.h)
    word_bits: int = 64     # K values per uint64 word
    bit_order: str = "bit b of word q is K index 64q + b; bit 1 = +1, bit 0 = -1"
    padding: str = "bits past K: 0 in weights (checked), anything in activations (ignored)"

    def packed_shape(self, k: int, n: int) -> tuple[int, int, int]:
        return (-(-n // self.nr), binary_words(k), self.nr)

    def nbytes(self, k: int, n: int) -> int:
        """Bytes of the packed weights of a K x N matrix (padding included)."""
        return 8 * math.prod(self.packed_shape(k, n))

    def pack_rows(self, rows: np.ndarray, k: int) -> np.ndarray:
        """Panels from weight rows already bit-packed like activations (uint64 [N, ceil(K/64)],
        one row per output column); padding bits are cleared. Returns a 64-byte-aligned array."""
        n, kw = rows.shape
        n_panels, _, nr = self.packed_shape(k, n)
        padded = np.zeros((n_panels * nr, kw), dtype=np.uint64)
        padded[:n] = rows
        padded[:, -1] &= np.uint64(tail_mask(k))
        out = aligned_empty((n_panels, kw, nr), np.uint64)
        out[...] = padded.reshape(n_panels, nr, kw).transpose(0, 2, 1)  # [p, j, q] -> [p, q, j]
        return out

    def unpack_rows(self, data: np.ndarray, k: int, n: int) -> np.ndarray:
        """The uint64 [N, ceil(K/64)] weight rows held by the panels ``data``."""
        n_panels, kw, nr = self.packed_shape(k, n)
        rows = data.reshape(n_panels, kw, nr).transpose(0, 2, 1).reshape(n_panels * nr, kw)
        return np.ascontiguousarray(rows[:n])

    def pack(self, w_kn: np.ndarray) -> np.ndarray:
        """Pack the signs of a [K, N] matrix (>= 0 is +1, < 0 is -1)."""
        return self.pack_rows(pack_bits(w_kn.T), w_kn.shape[0])

    def unpack(self, data: np.ndarray, k: int, n: int) -> np.ndarray:
        """The +-1 int8 [K, N] matrix that ``pack`` packed into ``data``."""
        return np.ascontiguousarray(unpack_bits(self.unpack_rows(data, k, n), k).T)


BINARY_PANELS = BinaryPanels()
FORMATS = {INT8_PANELS.name: INT8_PANELS, BINARY_PANELS.name: BINARY_PANELS}


class _PackedMatrix:
    """What every packed weight record offers: logical shape and stored bytes."""

    k: int
    n: int
    data: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """Logical (K, N) of the packed matrix."""
        return (self.k, self.n)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


@dataclass(frozen=True, eq=False)
class PackedWeights(_PackedMatrix):
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

    def unpack(self) -> np.ndarray:
        return self.fmt.unpack(self.data, self.k, self.n)


@dataclass(frozen=True, eq=False)
class PackedBinaryWeights(_PackedMatrix):
    """+-1 weights packed once in BINARY_PANELS for gemm_binary (``pack_weights(w, "binary")``)."""

    fmt: BinaryPanels
    k: int
    n: int
    data: np.ndarray = field(repr=False)  # uint64 [ceil(N/32), ceil(K/64), 32]

    def __post_init__(self) -> None:
        d = self.data
        nbytes = self.fmt.nbytes(self.k, self.n)
        if (not isinstance(d, np.ndarray) or d.dtype != np.uint64 or not d.flags.c_contiguous
                or d.nbytes != nbytes):
            raise ValueError(f"w_bits.data: not a packed uint64 buffer of {nbytes} bytes for "
                             f"K={self.k}, N={self.n}; use pack_weights(w, 'binary')")
        if d.ctypes.data % ALIGN:
            raise ValueError(f"w_bits.data: must be {ALIGN}-byte aligned; "
                             f"use pack_weights(w, 'binary')")
        # The kernels rely on zero padding bits in W (they correct for A's per row), O(N).
        last = d.reshape(self.fmt.packed_shape(self.k, self.n))[:, -1, :]
        if np.any(last & np.uint64(~tail_mask(self.k) & (2 ** 64 - 1))):
            raise ValueError("w_bits.data: padding bits past K must be 0; "
                             "use pack_weights(w, 'binary')")

    def rows(self) -> np.ndarray:
        """The weights as bit-packed rows, uint64 [N, ceil(K/64)] (one per output column)."""
        return self.fmt.unpack_rows(self.data, self.k, self.n)

    def unpack(self) -> np.ndarray:
        """The +-1 int8 [K, N] matrix."""
        return self.fmt.unpack(self.data, self.k, self.n)


def pack_binary_activations(x: np.ndarray) -> np.ndarray:
    """Bit-pack the signs of activations [M, K] for ``gemm_binary``: uint64 [M, ceil(K/64)].

    x >= 0 becomes +1 (bit 1), x < 0 becomes -1 (bit 0); bit b of word q is K index 64q + b
    and the padding bits past K are 0. Integer or float input (not bool; NaN is rejected).

    Example:
        >>> pack_binary_activations(np.array([[1.0, -2.0, 0.0]]))
        array([[5]], dtype=uint64)
    """
    x = _as_signs("x", x)
    if x.shape[1] < 1:
        raise ValueError(f"x: K must be at least 1, got shape {x.shape}")
    return pack_bits(x)


def _pack_binary(w: np.ndarray, layout: str) -> PackedBinaryWeights:
    w = _as_signs("w", w)
    w_nk = w.T if layout == "kn" else w
    n, k = w_nk.shape
    if k < 1 or n < 1:
        raise ValueError(f"w: K and N must be at least 1, got K={k}, N={n}")
    data = BINARY_PANELS.pack_rows(pack_bits(w_nk), k)
    return PackedBinaryWeights(fmt=BINARY_PANELS, k=k, n=n, data=data)


def pack_weights(w: np.ndarray, fmt: str = "int8", *,
                 layout: str = "kn") -> PackedWeights | PackedBinaryWeights:
    """Pack a weight matrix once into the layout the kernels of ``fmt`` read.

    Args:
        w: [K, N] with ``layout="kn"`` (``y = x @ w``) or [N, K] with ``layout="nk"``
            (torch ``nn.Linear.weight``). ``fmt="int8"``: int8 values, gives PackedWeights.
            ``fmt="binary"``: any integer or float array of signs (>= 0 is +1, < 0 is -1;
            not bool, no NaN), gives PackedBinaryWeights for ``gemm_binary``.
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
    if fmt == BINARY_PANELS.name:
        return _pack_binary(w, layout)
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
