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

INT4_PANELS / UINT4_PANELS are the grouped 4-bit layouts the int4 kernels read
(csrc/gemm_w4.c; ggml Q4_0 / GPTQ style). Every weight is a nibble n in [0, 15] whose value is

    int4 (symmetric):       v = n - 8                   in [-8, 7]
    uint4 (asymmetric):     v = n - z[g, j]             z an integer zero point in [0, 15]

and the dequantized weight is W[k, j] = v * scale[g, j] for the group g = k // group_size of
K (group_size 32, 64 or 128; K must be a multiple of it). Panels hold NR = 64 output columns;
K runs in blocks of 8, and the 8 nibbles of one column in one block share a 32-bit word of
four bytes, two nibbles per byte (nibble order):

    data[p, q, j, b] = n[8q + b, 64p + j] | n[8q + b + 4, 64p + j] << 4     b = 0..3

so one 64-byte load gives 16 columns x 8 K values; AND 0x0F of the bytes yields K 8q..8q+3,
the high nibbles K 8q+4..8q+7 (one vpdpbusd operand each), and as a 32-bit word the nibble
at bits 4i..4i+3 is K 8q + (i // 2 if i is even else 4 + i // 2). Scales (float16 or float32)
and zero points (uint8, uint4 only) are stored per panel: scales[p, g, j] = scale of group g
of column 64p + j. Padding columns (past N) have nibbles 0, scale 0 and zero point 0.
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


INT4_GROUP_SIZES = (32, 64, 128)
SCALE_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class Int4Panels:
    """Grouped 4-bit weights in 64-column panels with K blocks of 8 (module docstring).

    One descriptor per value rule: ``INT4_PANELS`` (symmetric, v = n - 8) and
    ``UINT4_PANELS`` (asymmetric, v = n - z with a zero point per group and column). The
    group size and the scale dtype are per packed matrix (``PackedInt4Weights``).
    """

    name: str = "int4"
    zero_point: bool = False   # uint4: an integer zero point per (group, column)
    bits: int = 4
    nr: int = 64               # output columns per panel (LB_W4_NR in csrc/lowbit.h)
    k_block: int = 8           # K values per 32-bit word of one column
    group_sizes: tuple[int, ...] = INT4_GROUP_SIZES
    scale_dtypes: tuple[str, ...] = SCALE_DTYPES
    nibble_order: str = ("byte b of the word of column j, block q holds K 8q + b in its low "
                         "nibble and K 8q + b + 4 in its high nibble")
    value_rule: str = "v = n - 8"

    @property
    def value_range(self) -> tuple[int, int]:
        """Range of the stored integer given to ``pack_weights``: v for int4, n for uint4."""
        return (0, 15) if self.zero_point else (-8, 7)

    def check_group_size(self, k: int, group_size: int) -> None:
        if group_size not in self.group_sizes:
            raise ValueError(f"group_size: must be one of {self.group_sizes}, got {group_size!r}")
        if k % group_size:
            raise ValueError(f"w, group_size: K={k} is not a multiple of group_size="
                             f"{group_size} (pad K with zero weights)")

    def packed_shape(self, k: int, n: int) -> tuple[int, int, int, int]:
        """Shape of the nibble bytes: (panels, K / 8, 64, 4); K a multiple of 8."""
        return (-(-n // self.nr), k // self.k_block, self.nr, 4)

    def group_shape(self, k: int, n: int, group_size: int) -> tuple[int, int, int]:
        """Shape of the scales and zero points: (panels, K / group_size, 64)."""
        return (-(-n // self.nr), k // group_size, self.nr)

    def nbytes(self, k: int, n: int, group_size: int, scale_dtype: str = "float16") -> int:
        """Bytes of the packed weights, scales and zero points (padding included)."""
        groups = math.prod(self.group_shape(k, n, group_size))
        per_group = np.dtype(scale_dtype).itemsize + (1 if self.zero_point else 0)
        return math.prod(self.packed_shape(k, n)) + groups * per_group

    def pack_nibbles(self, nib_kn: np.ndarray) -> np.ndarray:
        """Pack nibbles [K, N] (uint8 in [0, 15], K a multiple of 8); 64-byte-aligned uint8."""
        k, n = nib_kn.shape
        n_panels, kb, nr, _ = self.packed_shape(k, n)
        padded = np.zeros((k, n_panels * nr), dtype=np.uint8)
        padded[:, :n] = nib_kn
        # [q, half, b, p, j]: half 0 -> low nibble, half 1 -> high nibble
        blocks = padded.reshape(kb, 2, 4, n_panels, nr)
        byte = blocks[:, 0] | (blocks[:, 1] << 4)                 # [q, b, p, j]
        out = aligned_empty((n_panels, kb, nr, 4), np.uint8)
        out[...] = byte.transpose(2, 0, 3, 1)                     # [p, q, j, b]
        return out

    def unpack_nibbles(self, data: np.ndarray, k: int, n: int) -> np.ndarray:
        """The uint8 nibbles [K, N] that ``pack_nibbles`` packed into ``data``."""
        n_panels, kb, nr, _ = self.packed_shape(k, n)
        byte = data.reshape(n_panels, kb, nr, 4).transpose(1, 3, 0, 2)  # [q, b, p, j]
        nib = np.stack([byte & 0x0F, byte >> 4], axis=1)                 # [q, half, b, p, j]
        return np.ascontiguousarray(nib.reshape(k, n_panels * nr)[:, :n])

    def pack_groups(self, arr_gn: np.ndarray, dtype) -> np.ndarray:
        """Per-group values [K / group_size, N] into panels [panels, groups, 64] of ``dtype``."""
        g, n = arr_gn.shape
        n_panels = -(-n // self.nr)
        padded = np.zeros((g, n_panels * self.nr), dtype=dtype)
        padded[:, :n] = arr_gn
        out = aligned_empty((n_panels, g, self.nr), dtype)
        out[...] = padded.reshape(g, n_panels, self.nr).transpose(1, 0, 2)
        return out

    def unpack_groups(self, panels: np.ndarray, n: int) -> np.ndarray:
        """The [K / group_size, N] values that ``pack_groups`` laid out in ``panels``."""
        n_panels, g, nr = panels.shape
        return np.ascontiguousarray(panels.transpose(1, 0, 2).reshape(g, n_panels * nr)[:, :n])

    def pack(self, nib_kn: np.ndarray, scales_gn: np.ndarray, zeros_gn: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(data, scales, zeros) panels from nibbles [K, N], scales and zero points
        [K / group_size, N] (scales keep their dtype; zeros only for uint4)."""
        return (self.pack_nibbles(nib_kn), self.pack_groups(scales_gn, scales_gn.dtype),
                None if zeros_gn is None else self.pack_groups(zeros_gn, np.uint8))

    def unpack(self, data: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, k: int,
               n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The nibbles [K, N], scales and zero points [K / group_size, N] that ``pack`` laid
        out."""
        return (self.unpack_nibbles(data, k, n), self.unpack_groups(scales, n),
                None if zeros is None else self.unpack_groups(zeros, n))


INT4_PANELS = Int4Panels()
UINT4_PANELS = Int4Panels(name="uint4", zero_point=True, value_rule="v = n - z[g, j]")
FORMATS = {INT8_PANELS.name: INT8_PANELS, BINARY_PANELS.name: BINARY_PANELS,
           INT4_PANELS.name: INT4_PANELS, UINT4_PANELS.name: UINT4_PANELS}


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


@dataclass(frozen=True, eq=False)
class PackedInt4Weights(_PackedMatrix):
    """Grouped 4-bit weights packed once for gemm_w4a16 / gemm_w4a8
    (``pack_weights(w, "int4" | "uint4", group_size=...)``)."""

    fmt: Int4Panels
    k: int
    n: int
    group_size: int
    data: np.ndarray = field(repr=False)    # uint8 [panels, K/8, 64, 4] nibble bytes
    scales: np.ndarray = field(repr=False)  # float16/float32 [panels, K/group_size, 64]
    zeros: np.ndarray | None = field(default=None, repr=False)  # uint8, uint4 only

    def __post_init__(self) -> None:
        # Checked once here, so the kernels can trust every PackedInt4Weights they get.
        fmt, k, n = self.fmt, self.k, self.n
        how = f"use pack_weights(w, {fmt.name!r}, group_size=...)"
        if not isinstance(fmt, Int4Panels):
            raise TypeError(f"w4.fmt: expected an Int4Panels descriptor, got {type(fmt).__name__}")
        if not (isinstance(k, int) and isinstance(n, int) and k >= 1 and n >= 1):
            raise ValueError(f"w4.k, w4.n: must be positive integers, got K={k!r}, N={n!r}")
        fmt.check_group_size(k, self.group_size)
        d = self.data
        if (not isinstance(d, np.ndarray) or d.dtype != np.uint8 or not d.flags.c_contiguous
                or d.shape != fmt.packed_shape(k, n)):
            raise ValueError(f"w4.data: not a packed uint8 buffer of shape "
                             f"{fmt.packed_shape(k, n)} for K={k}, N={n}; {how}")
        gshape = fmt.group_shape(k, n, self.group_size)
        sc = self.scales
        if (not isinstance(sc, np.ndarray) or sc.dtype.name not in fmt.scale_dtypes
                or not sc.flags.c_contiguous or sc.shape != gshape):
            raise ValueError(f"w4.scales: must be a contiguous float16 or float32 array of "
                             f"shape {gshape}; {how}")
        if not np.all(np.isfinite(sc)):
            raise ValueError(f"w4.scales: must be finite; {how}")
        z = self.zeros
        if fmt.zero_point:
            if (not isinstance(z, np.ndarray) or z.dtype != np.uint8 or not z.flags.c_contiguous
                    or z.shape != gshape):
                raise ValueError(f"w4.zeros: uint4 weights need contiguous uint8 zero points "
                                 f"of shape {gshape}; {how}")
            if z.size and int(z.max()) > 15:
                raise ValueError(f"w4.zeros: zero points must lie in [0, 15]; {how}")
        elif z is not None:
            raise ValueError(f"w4.zeros: symmetric int4 weights have no zero points; {how}")
        for name, arr in (("data", d), ("scales", sc), ("zeros", z)):
            if arr is not None and arr.ctypes.data % ALIGN:
                raise ValueError(f"w4.{name}: must be {ALIGN}-byte aligned; {how}")

    @property
    def nbytes(self) -> int:
        """Stored bytes: nibbles, scales and zero points."""
        return int(self.data.nbytes + self.scales.nbytes
                   + (0 if self.zeros is None else self.zeros.nbytes))

    @property
    def n_groups(self) -> int:
        return self.k // self.group_size

    @property
    def scale_dtype(self) -> str:
        return self.scales.dtype.name

    def nibbles(self) -> np.ndarray:
        """The stored nibbles n, uint8 [K, N] in [0, 15]."""
        return self.fmt.unpack_nibbles(self.data, self.k, self.n)

    def group_scales(self) -> np.ndarray:
        """Scales [K / group_size, N] in their stored dtype."""
        return self.fmt.unpack_groups(self.scales, self.n)

    def zero_points(self) -> np.ndarray:
        """Zero points z [K / group_size, N] (uint8): 8 everywhere for int4."""
        if self.zeros is None:
            return np.full((self.n_groups, self.n), 8, dtype=np.uint8)
        return self.fmt.unpack_groups(self.zeros, self.n)

    def values(self) -> np.ndarray:
        """The integer weights v = n - z, int8 [K, N] (int4: [-8, 7]; uint4: [-15, 15])."""
        z = np.repeat(self.zero_points(), self.group_size, axis=0)
        return (self.nibbles().astype(np.int16) - z).astype(np.int8)

    def unpack(self) -> np.ndarray:
        """The stored integers as given to ``pack_weights``: v (int4) or n (uint4), int8 [K, N]."""
        return self.nibbles().astype(np.int8) if self.fmt.zero_point else self.values()

    def dequantize(self) -> np.ndarray:
        """float64 [K, N] weights v * scale (exact: v is small, scale float16/32)."""
        s = np.repeat(self.group_scales().astype(np.float64), self.group_size, axis=0)
        return self.values().astype(np.float64) * s


def quantize_int4(w_kn: np.ndarray, group_size: int, zero_point: bool,
                  scale_dtype: str = "float16") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Quantize float weights [K, N] per group of ``group_size`` K values of each column.

    Returns (nibbles uint8 [K, N], scales [K/g, N] of ``scale_dtype``, zero points uint8
    [K/g, N] or None). Rounding is to nearest, ties to even (``np.rint``); the scale is
    rounded to its dtype first and the nibbles computed with the rounded scale.

    * symmetric (int4): s = max|w| / 7, v = clip(rint(w / s), -8, 7), n = v + 8;
    * asymmetric (uint4, min/max): lo = min(w, 0), hi = max(w, 0) over the group,
      s = (hi - lo) / 15, z = clip(rint(-lo / s), 0, 15), n = clip(rint(w / s) + z, 0, 15).

    A group whose scale is 0 (all zeros, or below the dtype's range) stores v = 0.
    """
    k, n = w_kn.shape
    g = k // group_size
    wg = w_kn.astype(np.float64).reshape(g, group_size, n)
    if zero_point:
        lo = np.minimum(wg.min(axis=1), 0.0)
        hi = np.maximum(wg.max(axis=1), 0.0)
        raw = (hi - lo) / 15.0
    else:
        raw = np.abs(wg).max(axis=1) / 7.0
    limit = float(np.finfo(scale_dtype).max)
    if raw.size and raw.max() > limit:
        raise ValueError(f"w: a group scale ({raw.max():.3g}) exceeds the {scale_dtype} range; "
                         f"pass scale_dtype='float32' or rescale the weights")
    scales = raw.astype(scale_dtype)
    s = scales.astype(np.float64)
    safe = np.where(s > 0, s, 1.0)[:, None, :]
    with np.errstate(invalid="ignore"):
        q = np.rint(wg / safe)
    if zero_point:
        z = np.clip(np.rint(-lo / np.where(s > 0, s, 1.0)), 0, 15)
        z = np.where(s > 0, z, 0.0)
        nib = np.clip(q + z[:, None, :], 0, 15)
        nib = np.where((s > 0)[:, None, :], nib, 0.0)
        zeros = z.astype(np.uint8)
    else:
        v = np.where((s > 0)[:, None, :], np.clip(q, -8, 7), 0.0)
        nib = v + 8
        zeros = None
    return nib.reshape(k, n).astype(np.uint8), scales, zeros


def _as_group_array(name: str, arr, shape: tuple[int, int], layout: str) -> np.ndarray:
    """Per-group scales or zero points in the layout of w, returned as [K/g, N]."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(arr).__name__}")
    want = shape if layout == "kn" else shape[::-1]
    if arr.shape != want:
        raise ValueError(f"{name}: expected shape {want} ([K/group_size, N] for layout='kn', "
                         f"[N, K/group_size] for 'nk'), got {arr.shape}")
    return arr if layout == "kn" else arr.T


def _pack_int4(w, spec: Int4Panels, layout: str, group_size, scales, zero_points,
               scale_dtype) -> PackedInt4Weights:
    if not isinstance(w, np.ndarray):
        raise TypeError(f"w: expected a numpy.ndarray, got {type(w).__name__}")
    if w.ndim != 2:
        raise ValueError(f"w: expected a 2-D matrix, got shape {w.shape}")
    w_kn = w if layout == "kn" else w.T
    k, n = w_kn.shape
    if k < 1 or n < 1:
        raise ValueError(f"w: K and N must be at least 1, got K={k}, N={n}")
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)):
        raise TypeError(f"group_size: expected an integer, one of {spec.group_sizes}, got "
                        f"{group_size!r}")
    group_size = int(group_size)
    spec.check_group_size(k, group_size)
    if scale_dtype is not None:
        try:
            name = np.dtype(scale_dtype).name
        except TypeError:
            name = None
        if name not in spec.scale_dtypes:
            raise ValueError(f"scale_dtype: must be one of {spec.scale_dtypes}, got "
                             f"{scale_dtype!r}")
        scale_dtype = name
    gshape = (k // group_size, n)
    if np.issubdtype(w.dtype, np.floating):
        if scales is not None or zero_points is not None:
            raise ValueError("scales, zero_points: given with float weights; pass the "
                             "quantized integers as w, or leave them out to quantize")
        if not np.all(np.isfinite(w_kn)):
            raise ValueError("w: contains NaN or infinity")
        nib, sc, z = quantize_int4(w_kn, group_size, spec.zero_point,
                                   scale_dtype or "float16")
    elif np.issubdtype(w.dtype, np.integer) and w.dtype != np.bool_:
        lo, hi = spec.value_range
        if w_kn.size and (int(w_kn.min()) < lo or int(w_kn.max()) > hi):
            what = "nibbles n (v = n - zero point)" if spec.zero_point else "values v"
            raise ValueError(f"w: {spec.name} {what} must lie in [{lo}, {hi}], got "
                             f"[{int(w_kn.min())}, {int(w_kn.max())}]")
        if scales is None:
            raise ValueError(f"scales: required with integer (already quantized) {spec.name} "
                             f"weights, shape {gshape} for layout 'kn'")
        sc_arr = _as_group_array("scales", scales, gshape, layout)
        if sc_arr.dtype.name not in spec.scale_dtypes:
            raise TypeError(f"scales: dtype must be float16 or float32 (the stored scale "
                            f"dtype), got {sc_arr.dtype}")
        if scale_dtype is not None and np.dtype(scale_dtype) != sc_arr.dtype:
            raise ValueError(f"scale_dtype: {scale_dtype!r} differs from scales' dtype "
                             f"{sc_arr.dtype}")
        if not np.all(np.isfinite(sc_arr)):
            raise ValueError("scales: must be finite")
        sc = sc_arr
        if spec.zero_point:
            if zero_points is None:
                raise ValueError(f"zero_points: required with integer uint4 weights, shape "
                                 f"{gshape} for layout 'kn'")
            z_arr = _as_group_array("zero_points", zero_points, gshape, layout)
            if not np.issubdtype(z_arr.dtype, np.integer) or z_arr.dtype == np.bool_:
                raise TypeError(f"zero_points: expected integers, got dtype {z_arr.dtype}")
            if z_arr.size and (int(z_arr.min()) < 0 or int(z_arr.max()) > 15):
                raise ValueError("zero_points: must lie in [0, 15]")
            z = z_arr.astype(np.uint8)
        else:
            if zero_points is not None:
                raise ValueError("zero_points: symmetric int4 weights have none (use 'uint4')")
            z = None
        nib = (w_kn.astype(np.int16) + (0 if spec.zero_point else 8)).astype(np.uint8)
    else:
        raise TypeError(f"w: {spec.name} weights must be float (quantized here) or integer "
                        f"(already quantized), got dtype {w.dtype}")
    data, scales_p, zeros_p = spec.pack(nib, sc, z)
    return PackedInt4Weights(fmt=spec, k=k, n=n, group_size=group_size, data=data,
                             scales=scales_p, zeros=zeros_p)


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


def pack_weights(w: np.ndarray, fmt: str = "int8", *, layout: str = "kn",
                 group_size: int | None = None, scales: np.ndarray | None = None,
                 zero_points: np.ndarray | None = None, scale_dtype: str | None = None
                 ) -> PackedWeights | PackedBinaryWeights | PackedInt4Weights:
    """Pack a weight matrix once into the layout the kernels of ``fmt`` read.

    Args:
        w: [K, N] with ``layout="kn"`` (``y = x @ w``) or [N, K] with ``layout="nk"``
            (torch ``nn.Linear.weight``). ``fmt="int8"``: int8 values, gives PackedWeights.
            ``fmt="binary"``: any integer or float array of signs (>= 0 is +1, < 0 is -1;
            not bool, no NaN), gives PackedBinaryWeights for ``gemm_binary``.
            ``fmt="int4"`` / ``"uint4"``: float weights, quantized per group here
            (``quantize_int4``: symmetric absmax for int4, asymmetric min/max for uint4), or
            already-quantized integers with ``scales`` (and ``zero_points`` for uint4):
            int4 takes values v in [-8, 7], uint4 nibbles n in [0, 15] (v = n - zero point).
            Gives PackedInt4Weights for ``gemm_w4a16`` / ``gemm_w4a8``.
            ``fmt="csr"``: int8 or float32, dense or ``scipy.sparse``; gives
            PackedCsrWeights [N_out, K] for ``spmm_csr`` (``format_csr.pack_csr``; pass
            ``layout="nk"`` when the rows of w are the outputs).
            ``fmt="sparse24"``: an int8 or float32 matrix that is 2:4 sparse along K
            (``lowbit.kernels.format_sparse24``), gives PackedSparse24Weights.
        fmt: storage format name; one of ``lowbit.kernels.formats.FORMATS``.
        layout: "kn" or "nk", as above.
        group_size: int4/uint4 only: 32, 64 or 128 K values per scale (default 32); K must
            be a multiple of it.
        scales, zero_points: int4/uint4 with integer w: per-group scales (float16 or float32,
            kept in that dtype) and zero points (integers in [0, 15], uint4 only), shaped
            [K/group_size, N] for layout "kn" and [N, K/group_size] for "nk".
        scale_dtype: int4/uint4: "float16" (default when quantizing) or "float32".

    Example:
        >>> wp = pack_weights(np.ones((256, 128), np.int8))
        >>> wp.shape
        (256, 128)
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt: unknown weight format {fmt!r}; known: {', '.join(FORMATS)}")
    if layout not in ("kn", "nk"):
        raise ValueError(f"layout: must be 'kn' ([K, N]) or 'nk' ([N, K]), got {layout!r}")
    spec = FORMATS[fmt]
    if isinstance(spec, Int4Panels):
        return _pack_int4(w, spec, layout, 32 if group_size is None else group_size, scales,
                          zero_points, scale_dtype)
    extra = [name for name, v in (("group_size", group_size), ("scales", scales),
                                  ("zero_points", zero_points), ("scale_dtype", scale_dtype))
             if v is not None]
    if extra:
        raise ValueError(f"{extra[0]}: only for the int4 and uint4 formats, not {fmt!r}")
    if hasattr(spec, "pack_matrix"):  # formats defined in their own module (csr, sparse24)
        return spec.pack_matrix(w, layout)
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
