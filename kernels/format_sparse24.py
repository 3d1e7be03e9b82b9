"""The 2:4 semi-structured sparse weight format (``pack_weights(w, "sparse24")``).

A [K, N] matrix is 2:4 sparse when, in every column, each group of 4 consecutive K values
(K 4g .. 4g + 3) holds at most 2 nonzeros. Only the 2 kept values of each group are stored,
with their 2-bit indices inside the group: K/2 values plus 2 bits per kept value of metadata
(NVIDIA's "2:4 structured sparsity", Mishra et al., "Accelerating Sparse Deep Neural
Networks", arXiv:2104.08378). Values are int8 (for ``gemm_sparse24`` with int8 / uint8
activations, exact int32) or float32 (float32 activations).

Kept values. Group g of column j keeps indices i0 < i1 in [0, 4): the positions of its
nonzeros, completed with the lowest unused positions when it has fewer than 2 (values 0),
so every group stores exactly 2 values and the packing of a matrix is unique.

K tail. K is padded with zeros to a multiple of 32 (one metadata word, below): a partial
last group is a group whose missing K values are zero, so it must satisfy 2:4 over its real
values and never keeps a nonzero past K. The kernels pad the activations with zeros to the
same length.

Layout (csrc/gemm_sparse24.c reads it). Panels of NR = 64 output columns, zero past N; K in
blocks of 32 = 8 groups = 16 kept values per column; kept value u = 2 g + t of a block is
slot t of its group g (K order). A block is split in 4 steps s of 2 groups (8 K values,
4 kept values u = 4 s + r, r = 0..3: the vpdpbusd operand of the int8 kernels).

    int8 values     values[p, b, s, j, r] = kept value u = 4 s + r of column 64 p + j
                    (256 bytes per step: one 64-byte load = 16 columns x 4 kept values)
    float32 values  values[p, b, u, j]    (one 64-byte load = 16 columns x 1 kept value)
    metadata        meta[p, b, j] = uint32 word of column 64 p + j, block b:
                    bits 8 r + 2 s .. 8 r + 2 s + 1 hold the index in [0, 4) of kept value
                    u = 4 s + r within its group (K 32 b + 8 s + 4 (r >= 2) + index)

        bit 31        24 23        16 15         8 7          0
           [s3 s2 s1 s0][s3 s2 s1 s0][s3 s2 s1 s0][s3 s2 s1 s0]    2 bits per kept value
               r = 3        r = 2        r = 1        r = 0
           2nd of 2s+1  1st of 2s+1   2nd of 2s    1st of 2s        (group, slot) of step s

so ``(word >> 2 s) & 0x03030303`` is the four indices of step s, one per byte, the same
shift for every column: with 4 added to bytes 2 and 3 it is the byte-shuffle control that
gathers a column's 4 activations from the 8 of the step (vpshufb); ``(word >> (8 r + 2 s))
& 3`` plus 4 (g mod 4) indexes a 16-float window of 4 groups (vpermps).

Bytes: int8 1280 per block of 32 x 64 (1024 values + 256 metadata), 0.625 of dense int8;
float32 4352 (4096 + 256), 0.53 of dense float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .formats import ALIGN, FORMATS, _PackedMatrix, aligned_empty

VALUE_DTYPES = ("int8", "float32")
GROUP = 4       # K values per group
KEPT = 2        # kept values per group
# Bit position in a metadata word of the index of kept value u = 4 s + r: [s, r] -> 8 r + 2 s
_FIELD_SHIFT = (8 * np.arange(4)[None, :] + 2 * np.arange(4)[:, None]).astype(np.uint32)


@dataclass(frozen=True)
class Sparse24Panels:
    """2:4 sparse weights: kept values and 2-bit indices in 64-column panels, K blocks of 32
    (module docstring). One descriptor for both value dtypes; ``quad`` says how many kept
    values of one column are contiguous (4 for int8: one vpdpbusd lane; 1 for float32)."""

    name: str = "sparse24"
    nr: int = 64                # output columns per panel (LB_S24_NR in csrc/lowbit.h)
    group: int = GROUP
    kept: int = KEPT
    k_block: int = 32           # K values per metadata word of one column
    index_bits: int = 2         # metadata bits per kept value
    value_dtypes: tuple[str, ...] = VALUE_DTYPES
    kept_order: str = "i0 < i1: the nonzeros' positions, completed by the lowest unused ones"
    metadata_order: str = ("bits 8r + 2s of column j's word of block b: index of kept value "
                           "4s + r (r = 0, 1: group 2s; r = 2, 3: group 2s + 1)")
    k_tail: str = "K zero-padded to a multiple of 32; a partial group is 2:4 over its real values"

    @property
    def kept_per_block(self) -> int:
        return self.k_block // self.group * self.kept

    @staticmethod
    def quad(dtype) -> int:
        return 4 if np.dtype(dtype) == np.int8 else 1

    def blocks(self, k: int) -> int:
        return -(-k // self.k_block)

    def packed_shape(self, k: int, n: int, dtype) -> tuple[int, ...]:
        """Shape of the values: int8 (panels, K/32, 4, 64, 4); float32 (panels, K/32, 16, 64)."""
        p, b = -(-n // self.nr), self.blocks(k)
        q = self.quad(dtype)
        inner = (self.nr, q) if q > 1 else (self.nr,)
        return (p, b, self.kept_per_block // q, *inner)

    def meta_shape(self, k: int, n: int) -> tuple[int, int, int]:
        """Shape of the uint32 metadata words: (panels, K/32, 64)."""
        return (-(-n // self.nr), self.blocks(k), self.nr)

    def pack_matrix(self, w: np.ndarray, layout: str) -> "PackedSparse24Weights":
        """``pack_weights(w, "sparse24", layout=...)``: see ``pack_sparse24``."""
        return pack_sparse24(w, layout)

    def nbytes(self, k: int, n: int, dtype) -> int:
        """Bytes of the packed values and metadata (padding included)."""
        return (math.prod(self.packed_shape(k, n, dtype)) * np.dtype(dtype).itemsize
                + 4 * math.prod(self.meta_shape(k, n)))

    # --- compressed form <-> panels ---------------------------------------------------------

    def compress(self, w_kn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(kept values [G, 2, N], kept indices uint8 [G, 2, N]) of a 2:4 matrix [K, N],
        G = ceil(K/32) * 8 groups (padding groups keep zeros at (0, 1)). No check: see
        ``first_violation``."""
        k, n = w_kn.shape
        kp = self.blocks(k) * self.k_block
        padded = np.zeros((kp, n), dtype=w_kn.dtype)
        padded[:k] = w_kn
        wg = padded.reshape(kp // self.group, self.group, n)
        # nonzeros first, then zeros, each in K order; keep the first 2, ascending
        key = np.where(wg != 0, 0, self.group) + np.arange(self.group)[None, :, None]
        idx = np.sort(np.argsort(key, axis=1)[:, :self.kept, :], axis=1)
        return np.take_along_axis(wg, idx, axis=1), idx.astype(np.uint8)

    def expand(self, values: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
        """The dense [K, N] matrix of kept values [G, 2, N] at their indices (inverse of
        ``compress``)."""
        g, _, n = values.shape
        dense = np.zeros((g, self.group, n), dtype=values.dtype)
        np.put_along_axis(dense, index.astype(np.intp), values, axis=1)
        return np.ascontiguousarray(dense.reshape(g * self.group, n)[:k])

    def pack(self, values: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values panels, metadata panels) from kept values and indices [G, 2, N], G a
        multiple of 8 (``compress``); both 64-byte aligned."""
        g, _, n = values.shape
        b, p = g * self.group // self.k_block, -(-n // self.nr)
        v = np.zeros((b, self.kept_per_block, p * self.nr), dtype=values.dtype)
        v[:, :, :n] = values.reshape(b, self.kept_per_block, n)            # [b, u, col]
        i = np.zeros((b, 4, 4, p * self.nr), dtype=np.uint32)              # [b, s, r, col]
        i[..., :n] = index.reshape(b, 4, 4, n)
        words = np.bitwise_or.reduce(i << _FIELD_SHIFT[None, :, :, None], axis=(1, 2))
        meta = aligned_empty(self.meta_shape(g * self.group, n), np.uint32)
        meta[...] = words.reshape(b, p, self.nr).transpose(1, 0, 2)
        out = aligned_empty(self.packed_shape(g * self.group, n, values.dtype), values.dtype)
        q = self.quad(values.dtype)
        if q > 1:   # [b, s, r, p, j] -> [p, b, s, j, r]
            out[...] = v.reshape(b, 4, 4, p, self.nr).transpose(3, 0, 1, 4, 2)
        else:       # [b, u, p, j] -> [p, b, u, j]
            out[...] = v.reshape(b, self.kept_per_block, p, self.nr).transpose(2, 0, 1, 3)
        return out, meta

    def unpack(self, data: np.ndarray, meta: np.ndarray, n: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """(kept values [G, 2, N], kept indices uint8 [G, 2, N]) held by the panels."""
        p, b = meta.shape[:2]
        if self.quad(data.dtype) > 1:   # [p, b, s, j, r] -> [b, s, r, p, j]
            v = data.transpose(1, 2, 4, 0, 3)
        else:                           # [p, b, u, j] -> [b, u, p, j]
            v = data.transpose(1, 2, 0, 3)
        g = b * self.k_block // self.group
        values = np.ascontiguousarray(v.reshape(g, self.kept, p * self.nr)[:, :, :n])
        words = meta.transpose(1, 0, 2).reshape(b, 1, 1, p * self.nr)     # [b, ., ., col]
        idx = (words >> _FIELD_SHIFT[None, :, :, None]) & np.uint32(3)    # [b, s, r, col]
        index = np.ascontiguousarray(idx.reshape(g, self.kept, p * self.nr)[:, :, :n])
        return values, index.astype(np.uint8)

    def first_violation(self, w_kn: np.ndarray) -> str | None:
        """None if every group of 4 K values of every column of w [K, N] has at most 2
        nonzeros, else where the first one (lowest column, then lowest K) that does not is."""
        k, n = w_kn.shape
        g = -(-k // self.group)
        padded = np.zeros((g * self.group, n), dtype=bool)
        padded[:k] = w_kn != 0
        count = padded.reshape(g, self.group, n).sum(axis=1)               # [G, N]
        bad = np.argwhere(count.T > self.kept)                             # (column, group)
        if not bad.size:
            return None
        j, grp = (int(x) for x in bad[0])
        hi = min(self.group * grp + self.group, k) - 1
        return (f"column {j}, K {self.group * grp}..{hi} has {int(count[grp, j])} nonzeros "
                f"({len(bad)} such groups in all)")


SPARSE24_PANELS = Sparse24Panels()


@dataclass(frozen=True, eq=False)
class PackedSparse24Weights(_PackedMatrix):
    """2:4 sparse weights packed once for gemm_sparse24 (``pack_weights(w, "sparse24")``).

    ``values`` and ``meta`` are the panels of the module docstring; ``col_sum`` (int32 [N],
    int8 values: sum_k W[k, j], for the activation-offset corrections) and
    ``col_abs_sum_max`` (max_j sum_k |W[k, j]|, the accumulator-overflow guard) are derived
    here from the values, never given.
    """

    fmt: Sparse24Panels
    k: int
    n: int
    values: np.ndarray = field(repr=False)   # int8 or float32, fmt.packed_shape(k, n, dtype)
    meta: np.ndarray = field(repr=False)     # uint32 [panels, K/32, 64]
    col_sum: np.ndarray | None = field(init=False, repr=False, default=None)
    col_abs_sum_max: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        # Checked once here, so the kernels can trust every PackedSparse24Weights they get.
        fmt, k, n = self.fmt, self.k, self.n
        how = "use pack_weights(w, 'sparse24')"
        if not isinstance(fmt, Sparse24Panels):
            raise TypeError(f"w24.fmt: expected a Sparse24Panels descriptor, got "
                            f"{type(fmt).__name__}")
        if not (isinstance(k, int) and isinstance(n, int) and k >= 1 and n >= 1):
            raise ValueError(f"w24.k, w24.n: must be positive integers, got K={k!r}, N={n!r}")
        v = self.values
        if (not isinstance(v, np.ndarray) or v.dtype.name not in fmt.value_dtypes
                or not v.flags.c_contiguous or v.shape != fmt.packed_shape(k, n, v.dtype)):
            want = {d: fmt.packed_shape(k, n, d) for d in fmt.value_dtypes}
            raise ValueError(f"w24.values: not a contiguous packed buffer for K={k}, N={n} "
                             f"(int8 {want['int8']} or float32 {want['float32']}); {how}")
        m = self.meta
        if (not isinstance(m, np.ndarray) or m.dtype != np.uint32 or not m.flags.c_contiguous
                or m.shape != fmt.meta_shape(k, n)):
            raise ValueError(f"w24.meta: not a contiguous uint32 array of shape "
                             f"{fmt.meta_shape(k, n)}; {how}")
        for name, arr in (("values", v), ("meta", m)):
            if arr.ctypes.data % ALIGN:
                raise ValueError(f"w24.{name}: must be {ALIGN}-byte aligned; {how}")
        if v.dtype == np.float32 and not np.all(np.isfinite(v)):
            raise ValueError(f"w24.values: must be finite; {how}")
        every, index = fmt.unpack(v, m, m.shape[0] * fmt.nr)   # padding columns included
        values, index = every[:, :, :n], index[:, :, :n]
        if np.any(index[:, 0] >= index[:, 1]):
            raise ValueError(f"w24.meta: the two kept indices of a group must increase; {how}")
        # nothing past K (the padded K rows) and nothing past N (the padding columns)
        pos = (fmt.group * np.arange(values.shape[0], dtype=np.int64)[:, None, None]
               + index.astype(np.int64))
        if np.any((pos >= k) & (values != 0)) or np.any(every[:, :, n:] != 0):
            raise ValueError(f"w24.values: padding (past K or past N) must be zero; {how}")
        if v.dtype == np.int8:
            wide = values.astype(np.int64)
            object.__setattr__(self, "col_sum",
                               np.ascontiguousarray(wide.sum(axis=(0, 1)).astype(np.int32)))
            object.__setattr__(self, "col_abs_sum_max", int(np.abs(wide).sum(axis=(0, 1)).max()))

    @property
    def dtype(self) -> np.dtype:
        """The value dtype: int8 or float32."""
        return self.values.dtype

    @property
    def nbytes(self) -> int:
        """Stored bytes: kept values and metadata."""
        return int(self.values.nbytes + self.meta.nbytes)

    def kept(self) -> tuple[np.ndarray, np.ndarray]:
        """(kept values [G, 2, N], kept indices uint8 [G, 2, N]), G = 8 ceil(K/32) groups
        (the groups past K hold zeros); the compressed form ``ref.gemm_sparse24`` reads."""
        return self.fmt.unpack(self.values, self.meta, self.n)

    def unpack(self) -> np.ndarray:
        """The dense 2:4 [K, N] matrix (int8 or float32) given to ``pack_weights``."""
        values, index = self.kept()
        return self.fmt.expand(values, index, self.k)


def _as_weights(w, layout: str) -> np.ndarray:
    """w as a [K, N] int8 or float32 matrix view (checked, not copied)."""
    if not isinstance(w, np.ndarray):
        raise TypeError(f"w: expected a numpy.ndarray, got {type(w).__name__}")
    if w.dtype.name not in VALUE_DTYPES:
        raise TypeError(f"w: sparse24 weights must be int8 or float32, got dtype {w.dtype} "
                        f"(cast first, e.g. w.astype(np.float32))")
    if w.ndim != 2:
        raise ValueError(f"w: expected a 2-D matrix, got shape {w.shape}")
    w_kn = w if layout == "kn" else w.T
    if min(w_kn.shape) < 1:
        raise ValueError(f"w: K and N must be at least 1, got K={w_kn.shape[0]}, "
                         f"N={w_kn.shape[1]}")
    if w.dtype == np.float32 and not np.all(np.isfinite(w)):
        raise ValueError("w: contains NaN or infinity")
    return w_kn


def pack_sparse24(w: np.ndarray, layout: str = "kn") -> PackedSparse24Weights:
    """Pack a 2:4 sparse matrix (``pack_weights(w, "sparse24", layout=...)``); rejects one
    that is not 2:4 naming its first offending group (``prune_24`` makes one that is)."""
    w_kn = _as_weights(w, layout)
    where = SPARSE24_PANELS.first_violation(w_kn)
    if where is not None:
        raise ValueError(f"w: not 2:4 sparse along K: {where}; at most 2 of every 4 "
                         f"consecutive K values of a column may be nonzero "
                         f"(prune_24(w) keeps the 2 largest)")
    values, index = SPARSE24_PANELS.compress(w_kn)
    data, meta = SPARSE24_PANELS.pack(values, index)
    return PackedSparse24Weights(fmt=SPARSE24_PANELS, k=w_kn.shape[0], n=w_kn.shape[1],
                                 values=data, meta=meta)


def prune_24(w: np.ndarray, *, layout: str = "kn") -> np.ndarray:
    """Magnitude pruning to 2:4: in every group of 4 consecutive K values of each column keep
    the 2 largest |w| (the lower K index on ties) and zero the others.

    Args:
        w: int8 or float32, [K, N] (``layout="kn"``) or [N, K] (``"nk"``, nn.Linear.weight).
            A partial last group (K not a multiple of 4) keeps its 2 largest real values.
    Returns a new array of w's shape and dtype that ``pack_weights(., "sparse24")`` accepts.
    Mishra et al., arXiv:2104.08378 (magnitude-based 2:4 pruning).

    Example:
        >>> prune_24(np.array([[1, -5, 3, 2]], np.int8), layout="nk")
        array([[ 0, -5,  3,  0]], dtype=int8)
    """
    if layout not in ("kn", "nk"):
        raise ValueError(f"layout: must be 'kn' ([K, N]) or 'nk' ([N, K]), got {layout!r}")
    w_kn = _as_weights(w, layout)
    k, n = w_kn.shape
    g = -(-k // GROUP)
    mag = np.full((g * GROUP, n), -1.0)   # padding ranks below every real value
    mag[:k] = np.abs(w_kn.astype(np.float64))
    # stable sort of -|w|: the 2 largest of each group, the lower index first on ties
    order = np.argsort(-mag.reshape(g, GROUP, n), axis=1, kind="stable")
    keep = np.zeros((g, GROUP, n), dtype=bool)
    np.put_along_axis(keep, order[:, :KEPT], True, axis=1)
    out = np.where(keep.reshape(g * GROUP, n)[:k], w_kn, np.zeros((), w_kn.dtype))
    return np.ascontiguousarray(out if layout == "kn" else out.T)


# Listed beside the formats of formats.py (which cannot import this module: it imports
# formats); pack_weights finds the packer through Sparse24Panels.pack_matrix.
FORMATS.setdefault(SPARSE24_PANELS.name, SPARSE24_PANELS)
