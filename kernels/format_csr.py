"""CSR sparse weights for ``spmm_csr``: compressed rows padded to whole quads of 4 entries.

A weight matrix W [N_out, K] (one row per output, as ``nn.Linear.weight`` or a
``scipy.sparse`` matrix) keeps only its nonzeros, row by row, each row's column indices
strictly increasing. Every row's entries are padded to a multiple of QUAD = 4 with value 0
and the row's last column index (a valid index, whose x row is already in cache), so the
kernels consume whole quads with no tail: the AVX-512 VNNI kernel reads a quad's four int8
values as one 32-bit word (the broadcast operand of vpdpbusd) and gathers the quad's four
x rows, the others take the quad as two pairs or four single entries.

    W [3, 10]:  row 0: (col 1, 5) (col 4, -2) (col 7, 3)          3 nonzeros -> 4 entries
                row 1: no nonzeros                                 0          -> 0
                row 2: (0, 1) (2, 1) (3, 4) (5, 6) (9, 7)          5          -> 8

    row_ptr = [0,          4, 4,                        12]       int64 [N_out + 1]
    col_idx = [1  4  7  7 |    0  2  3  5 | 9  9  9  9]           int32 [stored]
    values  = [5 -2  3  0 |    1  1  4  6 | 7  0  0  0]           int8 or float32 [stored]
               `- quad -'      `- quad -'  `- quad -'   padding: value 0, last index

Index widths: column indices are int32 (K < 2^31, half the bytes of int64 on the stream
the kernel reads once per call); row pointers are int64, so the number of stored entries
is not limited to 2^31 - 1, for (N_out + 1) * 4 extra bytes (0.04% of the stored bytes of
4096 x 4096 int8 weights at 10% density, 1.5% at 1%). A stored zero is always padding:
packing drops explicit zeros, so ``nnz`` (the nonzeros) and the stored count can differ
only by the padding, fewer than 4 entries per row.

Values and indices start on 64-byte boundaries (``formats.aligned_empty``); the kernels do
not require it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .formats import FORMATS, aligned_empty

QUAD = 4  # entries per quad: the VNNI kernel's four products per int32 lane


def _is_scipy_sparse(w) -> bool:
    """True for scipy.sparse matrices and arrays, without importing scipy."""
    return type(w).__module__.startswith("scipy.sparse") and hasattr(w, "tocsr")


@dataclass(frozen=True)
class CsrRows:
    """The CSR layout of ``spmm_csr`` (see the module docstring): rows padded to quads."""

    name: str = "csr"
    quad: int = QUAD
    value_dtypes: tuple[str, ...] = ("int8", "float32")
    index_dtype: str = "int32"
    row_ptr_dtype: str = "int64"
    padding: str = "each row padded to a multiple of 4 entries: value 0, the row's last index"

    def stored(self, row_nnz: np.ndarray) -> np.ndarray:
        """Stored entries per row for ``row_nnz`` nonzeros: rounded up to whole quads."""
        return -(-np.asarray(row_nnz, np.int64) // self.quad) * self.quad

    def nbytes(self, row_nnz: np.ndarray, value_dtype) -> int:
        """Bytes of values, column indices and row pointers for rows of ``row_nnz`` nonzeros."""
        stored = int(self.stored(row_nnz).sum())
        return (stored * (np.dtype(value_dtype).itemsize + np.dtype(self.index_dtype).itemsize)
                + (len(row_nnz) + 1) * np.dtype(self.row_ptr_dtype).itemsize)

    def pack_rows(self, n_out: int, row_nnz: np.ndarray, cols: np.ndarray,
                  vals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row_ptr, col_idx, values) from the nonzeros in row order: ``row_nnz`` [N_out]
        per row, ``cols`` / ``vals`` [nnz] with each row's columns strictly increasing."""
        row_nnz = np.asarray(row_nnz, np.int64)
        padded = self.stored(row_nnz)
        row_ptr = np.zeros(n_out + 1, np.int64)
        np.cumsum(padded, out=row_ptr[1:])
        total = int(row_ptr[-1])
        values = aligned_empty((total,), vals.dtype)
        col_idx = aligned_empty((total,), np.int32)
        values[:] = 0
        start = np.zeros(n_out, np.int64)
        np.cumsum(row_nnz[:-1], out=start[1:])
        full = row_nnz > 0
        last = np.zeros(n_out, np.int32)   # padding index: the row's last column
        last[full] = cols[start[full] + row_nnz[full] - 1]
        col_idx[:] = np.repeat(last, padded)
        rows = np.repeat(np.arange(n_out, dtype=np.int64), row_nnz)
        dest = row_ptr[rows] + (np.arange(len(cols), dtype=np.int64) - start[rows])
        values[dest] = vals
        col_idx[dest] = cols
        return row_ptr, col_idx, values

    def pack(self, w_nk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row_ptr, col_idx, values) of a dense int8 or float32 W [N_out, K]."""
        rows, cols = np.nonzero(w_nk)
        row_nnz = np.bincount(rows, minlength=w_nk.shape[0])
        return self.pack_rows(w_nk.shape[0], row_nnz, cols.astype(np.int32), w_nk[rows, cols])

    def unpack(self, row_ptr: np.ndarray, col_idx: np.ndarray, values: np.ndarray,
               k: int) -> np.ndarray:
        """The dense W [N_out, K] (values' dtype) that ``pack`` laid out."""
        n_out = len(row_ptr) - 1
        dense = np.zeros((n_out, k), values.dtype)
        real = values != 0
        rows = np.repeat(np.arange(n_out), np.diff(row_ptr))
        dense[rows[real], col_idx[real]] = values[real]
        return dense

    def pack_matrix(self, w, layout: str) -> PackedCsrWeights:
        """``pack_weights(w, "csr", layout=...)``: see ``pack_csr``."""
        return pack_csr(w, layout=layout)


CSR_ROWS = CsrRows()


@dataclass(frozen=True, eq=False)
class PackedCsrWeights:
    """CSR weights W [N_out, K] in CSR_ROWS, checked once here so the kernels can trust them.

    Build with ``pack_csr`` (or ``pack_weights(w, "csr", layout=...)``). Derived once:
    ``nnz`` (nonzeros, padding excluded), ``row_nnz_max``, and for int8 values ``row_sum``
    (int32 [N_out], sum of each row: the VNNI kernel's offset correction) and
    ``row_abs_sum_max`` (max over rows of sum |w|: the int32 overflow guard).
    """

    fmt: CsrRows
    n_out: int
    k: int
    row_ptr: np.ndarray = field(repr=False)   # int64 [N_out + 1]
    col_idx: np.ndarray = field(repr=False)   # int32 [stored]
    values: np.ndarray = field(repr=False)    # int8 or float32 [stored]
    nnz: int = field(init=False)
    row_nnz_max: int = field(init=False, repr=False)
    row_sum: np.ndarray | None = field(init=False, repr=False)
    row_abs_sum_max: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        fmt, n_out, k = self.fmt, self.n_out, self.k
        how = "use pack_csr or pack_weights(w, 'csr')"
        if not isinstance(fmt, CsrRows):
            raise TypeError(f"w_csr.fmt: expected a CsrRows descriptor, got {type(fmt).__name__}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n_out, k)) \
                or n_out < 1 or not 1 <= k < 2 ** 31:
            raise ValueError(f"w_csr.n_out, w_csr.k: must be integers, N_out >= 1 and "
                             f"1 <= K < 2^31, got N_out={n_out!r}, K={k!r}")
        rp, ci, v = self.row_ptr, self.col_idx, self.values
        for name, arr, dtypes in (("row_ptr", rp, (fmt.row_ptr_dtype,)),
                                  ("col_idx", ci, (fmt.index_dtype,)),
                                  ("values", v, fmt.value_dtypes)):
            if (not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.dtype.name not in dtypes
                    or not arr.flags.c_contiguous):
                raise ValueError(f"w_csr.{name}: must be a contiguous 1-D array of dtype "
                                 f"{' or '.join(dtypes)}; {how}")
        if len(rp) != n_out + 1 or rp[0] != 0:
            raise ValueError(f"w_csr.row_ptr: must have N_out + 1 = {n_out + 1} entries "
                             f"starting at 0; {how}")
        row_len = np.diff(rp)
        if np.any(row_len < 0):
            raise ValueError(f"w_csr.row_ptr: must not decrease; {how}")
        if np.any(row_len % fmt.quad):
            raise ValueError(f"w_csr.row_ptr: every row must hold a multiple of {fmt.quad} "
                             f"entries (padded quads); {how}")
        stored = int(rp[-1])
        if len(ci) != stored or len(v) != stored:
            raise ValueError(f"w_csr.col_idx, w_csr.values: must have row_ptr[-1] = {stored} "
                             f"entries, got {len(ci)} and {len(v)}; {how}")
        if stored and (int(ci.min()) < 0 or int(ci.max()) >= k):
            raise ValueError(f"w_csr.col_idx: column indices must lie in [0, K) = [0, {k}); "
                             f"{how}")
        if v.dtype == np.float32 and not np.all(np.isfinite(v)):
            raise ValueError(f"w_csr.values: must be finite; {how}")
        real = v != 0
        rows = np.repeat(np.arange(n_out, dtype=np.int64), row_len)
        row_nnz = np.bincount(rows[real], minlength=n_out)
        _check_rows(rp, ci, real, rows, row_len, row_nnz, fmt, how)
        set_ = object.__setattr__
        set_(self, "nnz", int(real.sum()))
        set_(self, "row_nnz_max", int(row_nnz.max()))
        if v.dtype == np.int8:
            wide = v.astype(np.int64)
            sums = np.bincount(rows, weights=wide, minlength=n_out).astype(np.int64)
            abs_sums = np.bincount(rows, weights=np.abs(wide), minlength=n_out)
            set_(self, "row_sum", np.ascontiguousarray(sums.astype(np.int32)))
            set_(self, "row_abs_sum_max", int(abs_sums.max()))
        else:
            set_(self, "row_sum", None)
            set_(self, "row_abs_sum_max", 0)

    @property
    def shape(self) -> tuple[int, int]:
        """(N_out, K), as a scipy matrix's shape."""
        return (self.n_out, self.k)

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def stored(self) -> int:
        """Stored entries: the nonzeros plus the quad padding."""
        return len(self.values)

    @property
    def density(self) -> float:
        return self.nnz / (self.n_out * self.k)

    @property
    def nbytes(self) -> int:
        """Stored bytes: values, column indices and row pointers."""
        return int(self.values.nbytes + self.col_idx.nbytes + self.row_ptr.nbytes)

    def row_nnz(self) -> np.ndarray:
        """Nonzeros per row, int64 [N_out]."""
        rows = np.repeat(np.arange(self.n_out), np.diff(self.row_ptr))
        return np.bincount(rows[self.values != 0], minlength=self.n_out)

    def unpack(self) -> np.ndarray:
        """The dense W [N_out, K] (int8 or float32)."""
        return self.fmt.unpack(self.row_ptr, self.col_idx, self.values, self.k)

    def to_scipy(self):
        """The nonzeros as a ``scipy.sparse.csr_matrix`` [N_out, K] (padding dropped)."""
        import scipy.sparse

        real = self.values != 0
        rows = np.repeat(np.arange(self.n_out), np.diff(self.row_ptr))
        return scipy.sparse.csr_matrix((self.values[real], (rows[real], self.col_idx[real])),
                                       shape=self.shape)


def _check_rows(rp, ci, real, rows, row_len, row_nnz, fmt: CsrRows, how: str) -> None:
    """Per row: the nonzeros first, columns strictly increasing, then fewer than a quad of
    padding (value 0, the last nonzero's column)."""
    if not len(real):
        return
    offset = np.arange(len(real), dtype=np.int64) - rp[:-1][rows]
    if not np.array_equal(real, offset < row_nnz[rows]) or \
            np.any(row_len != fmt.stored(row_nnz)):
        raise ValueError(f"w_csr.values: each row must hold its nonzeros, then fewer than "
                         f"a quad of padding zeros; {how}")
    same_row = rows[1:] == rows[:-1]
    step = np.diff(ci.astype(np.int64))
    if np.any(same_row & real[1:] & (step <= 0)):
        raise ValueError(f"w_csr.col_idx: column indices must increase strictly within each "
                         f"row; {how}")
    if np.any(same_row & ~real[1:] & (step != 0)):
        raise ValueError(f"w_csr.col_idx: padding entries must repeat the row's last column "
                         f"index; {how}")


def _check_value_dtype(dtype) -> None:
    if dtype.name not in CSR_ROWS.value_dtypes:
        raise TypeError(f"w: csr weights must have dtype int8 or float32, got {dtype}")


def _from_scipy(w, layout: str) -> PackedCsrWeights:
    _check_value_dtype(w.dtype)
    dtype = w.dtype
    # Widen before anything sums duplicate entries (tocsr does): int8 sums could wrap.
    m = (w.T if layout == "kn" else w).astype(np.int64 if dtype == np.int8 else np.float64)
    m = m.tocsr(copy=True)
    if m.ndim != 2:
        raise ValueError(f"w: expected a 2-D sparse matrix, got shape {m.shape}")
    n_out, k = m.shape
    if n_out < 1 or k < 1:
        raise ValueError(f"w: N_out and K must be at least 1, got shape {m.shape}")
    if k >= 2 ** 31:
        raise ValueError(f"w: K must be below 2^31 (int32 column indices), got K={k}")
    m.sum_duplicates()
    m.eliminate_zeros()
    m.sort_indices()
    if m.nnz and dtype == np.int8 and (m.data.min() < -128 or m.data.max() > 127):
        raise ValueError("w: duplicate entries sum to a value outside int8")
    if m.nnz and dtype == np.float32 and not np.all(np.isfinite(m.data.astype(np.float32))):
        raise ValueError("w: contains NaN or infinity (or duplicates summing past float32)")
    row_nnz = np.diff(m.indptr).astype(np.int64)
    row_ptr, col_idx, values = CSR_ROWS.pack_rows(
        n_out, row_nnz, m.indices.astype(np.int32), m.data.astype(dtype))
    return PackedCsrWeights(CSR_ROWS, n_out, k, row_ptr, col_idx, values)


def pack_csr(w, *, layout: str = "nk") -> PackedCsrWeights:
    """Pack sparse weights once for ``spmm_csr``: CSR rows padded to quads (CSR_ROWS).

    Zeros are dropped (a dense matrix keeps its nonzeros, a scipy matrix its stored
    nonzeros, duplicates summed); the values keep their dtype, int8 or float32.

    Args:
        w: a dense numpy array or a ``scipy.sparse`` matrix / array, dtype int8 or float32
            (finite). [N_out, K] with ``layout="nk"`` (the default: rows are outputs, as
            ``nn.Linear.weight``), or [K, N_out] with ``layout="kn"`` (``y = x @ w``).
        layout: "nk" or "kn", as above.

    Example:
        >>> w = pack_csr(np.array([[0, 5, 0], [0, 0, 0], [1, 0, -2]], np.int8))
        >>> w.row_ptr.tolist(), w.col_idx.tolist(), w.values.tolist()
        ([0, 4, 4, 8], [1, 1, 1, 1, 0, 2, 2, 2], [5, 0, 0, 0, 1, -2, 0, 0])
    """
    if layout not in ("kn", "nk"):
        raise ValueError(f"layout: must be 'nk' ([N_out, K]) or 'kn' ([K, N_out]), got "
                         f"{layout!r}")
    if _is_scipy_sparse(w):
        return _from_scipy(w, layout)
    if not isinstance(w, np.ndarray):
        raise TypeError(f"w: expected a numpy.ndarray or a scipy.sparse matrix, got "
                        f"{type(w).__name__}")
    _check_value_dtype(w.dtype)
    if w.ndim != 2:
        raise ValueError(f"w: expected a 2-D matrix, got shape {w.shape}")
    w_nk = w if layout == "nk" else w.T
    n_out, k = w_nk.shape
    if n_out < 1 or k < 1:
        raise ValueError(f"w: N_out and K must be at least 1, got N_out={n_out}, K={k}")
    if k >= 2 ** 31:
        raise ValueError(f"w: K must be below 2^31 (int32 column indices), got K={k}")
    if w.dtype == np.float32 and not np.all(np.isfinite(w)):
        raise ValueError("w: contains NaN or infinity")
    row_ptr, col_idx, values = CSR_ROWS.pack(w_nk)
    return PackedCsrWeights(CSR_ROWS, n_out, k, row_ptr, col_idx, values)


# Listed beside the formats of formats.py (which cannot import this module: it imports
# formats); pack_weights finds the packer through CsrRows.pack_matrix.
FORMATS.setdefault(CSR_ROWS.name, CSR_ROWS)
