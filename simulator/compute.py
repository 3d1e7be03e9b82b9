"""Compute model: how one GEMM folds onto a rows x cols systolic array, per dataflow.

Input: a ``GemmProblem`` (the GEMM as the array runs it: precision packing and 2:4 skipping
already applied to the reduction) and the array. Output: a ``FoldPlan`` (one entry per fold,
in execution order, as NumPy arrays) and, per fold, the explicit demand it places on each
buffer (``FoldPlan.read_demand`` / ``FoldPlan.write_demand``), which the memory model turns
into DRAM traffic and stalls. No memory timing happens here.

Mapping (SCALE-Sim's, ``topology_utils.calc_spatio_temporal_params``)::

    dataflow  array rows (Sr)   array cols (Sc)   time (T)      stationary operand
    os        M (ofmap rows)    N (filters)       S red. steps  none (outputs stay in PEs)
    ws        S red. steps      N                 M             filter
    is        S red. steps      M                 N             ifmap

S = the number of reduction steps a PE takes: ceil(K' / p), with p MACs per PE per cycle at
the layer's precision (``Profile.macs_per_cycle``) and K' = K, or ceil(K / 2) when 2:4 weight
sparsity is skipped (see ``Reduction``). Folds iterate column folds outer, row folds inner
(SCALE-Sim's order); the lowbit convention inserts "segments" of T between them for ws / is
when the partial sums of a column fold do not fit the ofmap buffer (``fold_plan``).

Fold length (cycles), r x c = rows x cols used by the fold, t = its time extent, R = rows:

* lowbit: ``r + c + t + R - 2`` for all three dataflows (for a full fold 2R + C + T - 2, the
  SCALE-Sim v2 paper's formula). os: the SRAM streams ifmap / filter line j at cycle j; edge
  skew buffers delay array row i by i and column j by j, so PE(i, j) does step j' at
  i + j + j'; after its last MAC each column shifts its R accumulators out of the bottom edge,
  so output row i leaves at r + c + t + R - 3 - i. ws / is: the r rows of the stationary
  operand are shifted in (cycles 0..r-1), the streamed operand's line j is read at r + j,
  and its partial sums leave the bottom edge (all R rows deep) at r + j + c + R - 2.
* scalesim: SCALE-Sim v3.0.0's demand-matrix lengths: os ``t + R + C - 2``, ws / is
  ``2R + C + t - 2``, full R and C even for partial folds (see CONVENTIONS.md).

SRAM counts are element counts (one operand word each); see ``sram_counts``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hardware import Profile
from .workload import Conv2d, GemmShape, Layer

DATAFLOWS = ("os", "ws", "is")
CONVENTIONS = ("lowbit", "scalesim")
PSUM_BITS = 32          # partial sums of ws / is row folds are held at accumulator precision
SPARSE24_META_BITS = 2  # a kept 2:4 weight carries a 2-bit position index (NVIDIA's format)


@dataclass(frozen=True)
class Reduction:
    """How the K dimension runs through one PE.

    A PE takes ``steps`` reduction steps; step s consumes activations
    [s * a_step, (s + 1) * a_step) and weights [s * w_step, (s + 1) * w_step) of the K
    dimension (clipped at ``a_total`` / ``w_total``; only the last step can be short).
    Dense: a_step = w_step = p (MACs per PE per cycle), a_total = w_total = K.
    2:4 skipped: only the ceil(K / 2) kept weights are stored and multiplied (w_total), the
    activation side still reads all K activations and selects two of every four, so
    a_step = 2p.
    """

    k: int
    steps: int
    a_step: int
    w_step: int
    a_total: int
    w_total: int
    macs_per_pe: int
    sparse24: bool

    def a_elems(self, lo, hi):
        """Activations consumed by steps [lo, hi) (ints or NumPy arrays)."""
        return (np.minimum(hi * self.a_step, self.a_total)
                - np.minimum(lo * self.a_step, self.a_total))

    def w_elems(self, lo, hi):
        """Weights consumed by steps [lo, hi) (ints or NumPy arrays)."""
        return (np.minimum(hi * self.w_step, self.w_total)
                - np.minimum(lo * self.w_step, self.w_total))


@dataclass(frozen=True)
class GemmProblem:
    """One GEMM C[M, N] = A[M, K] @ B[K, N] as the array runs it (one instance of ``count``).

    ``a_distinct``: distinct ifmap elements behind A (M*K for a GEMM; the input pixels a
    convolution's windows touch, times its channels per group, for an im2col matrix).
    ``notes``: why the problem differs from the layer (e.g. 2:4 not supported by the profile).
    """

    m: int
    n: int
    k: int
    a_bits: int
    w_bits: int
    red: Reduction
    a_distinct: int
    notes: tuple[str, ...] = ()

    @property
    def out_bits(self) -> int:
        """Outputs are requantized to the activation precision before they are written."""
        return self.a_bits

    @property
    def filter_bits(self) -> int:
        """Bits per stored weight (2:4: plus its position index)."""
        return self.w_bits + (SPARSE24_META_BITS if self.red.sparse24 else 0)

    @property
    def effectual_macs(self) -> int:
        return self.m * self.n * self.red.w_total

    @property
    def dense_macs(self) -> int:
        return self.m * self.n * self.k


def _touched(size: int, kernel: int, stride: int, padding: int, out: int) -> int:
    """Input positions along one axis that some window reads (padding excluded)."""
    hit = np.zeros(size, dtype=bool)
    for o in range(out):
        lo = o * stride - padding
        hit[max(lo, 0):max(min(lo + kernel, size), 0)] = True
    return int(hit.sum())


def conv_ifmap_distinct(layer: Conv2d) -> int:
    """Distinct input elements one group's im2col matrix reads (windows clipped to the input)."""
    rows = _touched(layer.in_h, layer.kernel_h, layer.stride, layer.padding, layer.out_h)
    cols = _touched(layer.in_w, layer.kernel_w, layer.stride, layer.padding, layer.out_w)
    return rows * cols * (layer.in_ch // layer.groups)


def make_reduction(k: int, macs_per_pe: int, sparse24: bool) -> Reduction:
    if sparse24:
        kept = -(-k // 2)
        return Reduction(k, -(-kept // macs_per_pe), 2 * macs_per_pe, macs_per_pe, k, kept,
                         macs_per_pe, True)
    return Reduction(k, -(-k // macs_per_pe), macs_per_pe, macs_per_pe, k, k, macs_per_pe, False)


def make_problem(gemm: GemmShape, layer: Layer, profile: Profile) -> GemmProblem:
    """The GEMM as ``profile`` runs it: MACs per PE at the layer's precision, 2:4 skipping."""
    notes = []
    bits = max(layer.a_bits, layer.w_bits)
    p = profile.macs_per_cycle(bits)
    kind = layer.sparsity.kind
    sparse = kind == "2:4" and profile.sparsity == "2:4"
    if kind == "2:4" and not sparse:
        notes.append("2:4 weights run dense: the profile does not skip 2:4 sparsity")
    elif kind == "unstructured":
        notes.append("unstructured sparsity runs dense: the array cannot skip it")
    distinct = conv_ifmap_distinct(layer) if isinstance(layer, Conv2d) else gemm.m * gemm.k
    return GemmProblem(gemm.m, gemm.n, gemm.k, layer.a_bits, layer.w_bits,
                       make_reduction(gemm.k, p, sparse), min(distinct, gemm.m * gemm.k),
                       tuple(notes))


def dims(problem: GemmProblem, dataflow: str) -> tuple[int, int, int]:
    """(Sr, Sc, T): what spans the array rows, the array columns, and time."""
    s = problem.red.steps
    if dataflow == "os":
        return problem.m, problem.n, s
    if dataflow == "ws":
        return s, problem.n, problem.m
    if dataflow == "is":
        return s, problem.m, problem.n
    raise ValueError(f"dataflow must be one of {', '.join(DATAFLOWS)}, got {dataflow!r}")


def fold_length(r, c, t, rows: int, cols: int, dataflow: str, convention: str):
    """Cycles of one fold (see the module docstring); works on ints and arrays."""
    if convention == "lowbit":
        return r + c + t + rows - 2
    if dataflow == "os":
        return t + rows + cols - 2
    return 2 * rows + cols + t - 2


def segment_length(problem: GemmProblem, rows: int, cols: int, dataflow: str, convention: str,
                   ofmap_half_bits: int) -> int:
    """Time extent of one segment: T, unless lowbit ws / is partial sums must be tiled.

    With more than one row fold, ws / is accumulate partial sums of a column fold in the
    ofmap buffer: t rows of up to ``cols`` partial sums (``PSUM_BITS`` each) must fit one half
    of it, so T is cut into segments of that many rows (0 = not even one row fits).
    """
    sr, sc, t = dims(problem, dataflow)
    if convention != "lowbit" or dataflow == "os" or sr <= rows:
        return t
    return min(t, ofmap_half_bits // (min(cols, sc) * PSUM_BITS))


@dataclass(frozen=True)
class FoldPlan:
    """Every fold of one GEMM on one array, in execution order (arrays of length ``folds``).

    fc / seg / fr: column fold, segment of T, row fold. r, c, t: rows and columns used and
    time extent. s0: first reduction step held by the fold's rows (ws / is; 0 for os).
    start / length: first array cycle (stall-free) and cycles of the fold.
    load_off: cycle of the stationary operand's first line (ws / is).
    stream_off: cycle of the streamed operands' first line.
    out_off: cycle of the fold's first output line.
    """

    dataflow: str
    convention: str
    rows: int
    cols: int
    sr: int
    sc: int
    t_total: int
    seg_len: int
    n_fr: int
    n_fc: int
    n_seg: int
    fc: np.ndarray
    seg: np.ndarray
    fr: np.ndarray
    r: np.ndarray
    c: np.ndarray
    t: np.ndarray
    s0: np.ndarray
    start: np.ndarray
    length: np.ndarray
    load_off: np.ndarray
    stream_off: np.ndarray
    out_off: np.ndarray

    @property
    def folds(self) -> int:
        return len(self.r)

    @property
    def cycles(self) -> int:
        return int(self.length.sum())

    def out_lines(self) -> np.ndarray:
        """Output lines written per fold (os: one per used array row; ws / is: one per t)."""
        return self.r if self.dataflow == "os" else self.t

    def read_demand(self, problem: GemmProblem, operand: str) -> "ReadDemand":
        """The lines fold f reads from the ``operand`` buffer (``ReadDemand``)."""
        red, df = problem.red, self.dataflow
        z = np.zeros_like(self.r)
        if df == "os":
            # ifmap tile: rows [fr*R, +r) of A, all steps; filter tile: cols of B, all steps
            steps = np.full_like(self.r, red.steps)
            if operand == "ifmap":
                return ReadDemand("step", self.fr, steps, self.stream_off, self.r, z, "a")
            return ReadDemand("step", self.fc, steps, self.stream_off, self.c, z, "w")
        stationary = "filter" if df == "ws" else "ifmap"
        kind = "w" if operand == "filter" else "a"
        if operand == stationary:
            key = self.fc * self.n_fr + self.fr
            return ReadDemand("step", key, self.r, self.load_off, self.c, self.s0, kind)
        key = self.seg * self.n_fr + self.fr
        return ReadDemand("uniform", key, self.t, self.stream_off, self.r, self.s0, kind)


@dataclass(frozen=True)
class ReadDemand:
    """Per fold: the lines one operand buffer serves, one line per cycle.

    kind "step": line l is reduction step s0 + l of ``cross`` array rows / columns (its
    elements: cross * steps' width). kind "uniform": line l is one time step of the streamed
    operand across the fold's r rows (elements: width of steps [s0, s0 + r)).
    key: the tile's identity (equal keys = the same operand elements); lines: lines per fold;
    off: fold cycle of line 0 (line l is read at off + l).
    """

    kind: str
    key: np.ndarray
    lines: np.ndarray
    off: np.ndarray
    cross: np.ndarray
    s0: np.ndarray
    red: str            # "a" or "w": which side of the reduction the operand is

    def take(self, idx) -> "ReadDemand":
        """The demand of folds ``idx`` (one entry per index, e.g. per DRAM block)."""
        return ReadDemand(self.kind, self.key[idx], self.lines[idx], self.off[idx],
                          self.cross[idx], self.s0[idx], self.red)

    def elems(self, problem: GemmProblem, l0, l1):
        """Elements of lines [l0, l1) of each fold."""
        f = problem.red.a_elems if self.red == "a" else problem.red.w_elems
        if self.kind == "step":
            return self.cross * f(self.s0 + l0, self.s0 + l1)
        return (l1 - l0) * f(self.s0, self.s0 + self.cross)


def fold_plan(problem: GemmProblem, rows: int, cols: int, dataflow: str, convention: str,
              seg_len: int | None = None) -> FoldPlan:
    """All folds of ``problem`` on a rows x cols array (``seg_len`` from ``segment_length``)."""
    sr, sc, t_total = dims(problem, dataflow)
    seg_len = t_total if seg_len is None else seg_len
    n_fr, n_fc, n_seg = -(-sr // rows), -(-sc // cols), -(-t_total // seg_len)
    fc, seg, fr = (a.ravel() for a in np.meshgrid(np.arange(n_fc), np.arange(n_seg),
                                                   np.arange(n_fr), indexing="ij"))
    fc, seg, fr = (a.astype(np.int64) for a in (fc, seg, fr))
    r = np.minimum(rows, sr - fr * rows)
    c = np.minimum(cols, sc - fc * cols)
    t = np.minimum(seg_len, t_total - seg * seg_len)
    length = fold_length(r, c, t, rows, cols, dataflow, convention).astype(np.int64)
    start = np.concatenate(([0], np.cumsum(length)[:-1])).astype(np.int64)
    s0 = fr * rows if dataflow != "os" else np.zeros_like(fr)
    if convention == "lowbit":
        load_off = np.zeros_like(r)
        stream_off = np.zeros_like(r) if dataflow == "os" else r.copy()
        out_off = length - (r if dataflow == "os" else t)
    else:  # SCALE-Sim's demand rows: weights / ifmap loaded in the last r of R load cycles
        load_off = rows - r
        stream_off = np.zeros_like(r) if dataflow == "os" else np.full_like(r, rows)
        out_off = (t - 1 + rows - r) if dataflow == "os" else np.full_like(r, 2 * rows - 1)
    return FoldPlan(dataflow, convention, rows, cols, sr, sc, t_total, seg_len, n_fr, n_fc, n_seg,
                    fc, seg, fr, r, c, t, s0, start, length, load_off, stream_off, out_off)


@dataclass(frozen=True)
class SramCounts:
    """SRAM accesses of one GEMM, in elements (operand words)."""

    ifmap_reads: int
    filter_reads: int
    ofmap_writes: int
    ofmap_reads: int       # partial sums read back for accumulation (lowbit ws / is)
    ifmap_bits: int
    filter_bits: int
    ofmap_write_bits: int
    ofmap_read_bits: int


def sram_counts(plan: FoldPlan, problem: GemmProblem) -> SramCounts:
    """SRAM reads / writes per operand, summed over the folds' lines.

    lowbit: ws / is write every row fold's outputs (partial sums at ``PSUM_BITS`` but the
    last) and read them back in every row fold after the first. scalesim: SCALE-Sim's counts,
    including its os over-count of R + C ofmap writes per fold (bug 3) and no read-backs.
    """
    ifd, fid = plan.read_demand(problem, "ifmap"), plan.read_demand(problem, "filter")
    ifm = int(ifd.elems(problem, 0, ifd.lines).sum())
    fil = int(fid.elems(problem, 0, fid.lines).sum())
    per_fold_out = plan.out_lines() * plan.c
    writes = int(per_fold_out.sum())
    reads = 0
    w_bits = writes * problem.out_bits
    r_bits = 0
    if plan.convention == "scalesim":
        if plan.dataflow == "os":
            writes += plan.folds * (plan.rows + plan.cols)
        w_bits = writes * problem.out_bits
    elif plan.dataflow != "os" and plan.n_fr > 1:
        last = plan.fr == plan.n_fr - 1
        reads = int(per_fold_out[plan.fr > 0].sum())
        w_bits = int(per_fold_out[last].sum()) * problem.out_bits \
            + int(per_fold_out[~last].sum()) * PSUM_BITS
        r_bits = reads * PSUM_BITS
    return SramCounts(ifm, fil, writes, reads, ifm * problem.a_bits, fil * problem.filter_bits,
                      w_bits, r_bits)


@dataclass(frozen=True)
class Efficiency:
    mapping_efficiency: float    # mean over folds of r * c / (R * C)
    compute_utilization: float   # useful MAC slots / PE slots while computing (stalls excluded)


def efficiency(plan: FoldPlan, problem: GemmProblem) -> Efficiency:
    """Mapping efficiency and compute utilization (fractions, not %).

    lowbit: utilization = effectual MACs / (R * C * p * compute cycles), p = MACs per PE per
    cycle. scalesim: SCALE-Sim's mean over folds of r * c * t / (R * C * L_f) with
    L_f = t + R + C - 2 (os) but 2R + 2C + t - 3 (ws / is, one C - 1 too many: bug 4).
    """
    rc = plan.r * plan.c
    mapping = float(rc.sum()) / (plan.folds * plan.rows * plan.cols)
    if plan.convention == "lowbit":
        slots = plan.rows * plan.cols * problem.red.macs_per_pe * plan.cycles
        return Efficiency(mapping, problem.effectual_macs / slots)
    if plan.dataflow == "os":
        lf = plan.t + plan.rows + plan.cols - 2
    else:
        lf = 2 * plan.rows + 2 * plan.cols + plan.t - 3
    util = float(np.mean(rc * plan.t / (plan.rows * plan.cols * lf)))
    return Efficiency(mapping, util)


def problem_key(problem: GemmProblem) -> tuple:
    """A hashable identity for memoizing identical GEMMs within one network."""
    return (problem.m, problem.n, problem.k, problem.a_bits, problem.w_bits, problem.red,
            problem.a_distinct)


__all__ = ["DATAFLOWS", "CONVENTIONS", "PSUM_BITS", "SPARSE24_META_BITS", "Reduction",
           "GemmProblem", "FoldPlan", "ReadDemand", "SramCounts", "Efficiency",
           "make_reduction", "make_problem", "conv_ifmap_distinct", "dims", "fold_length",
           "segment_length", "fold_plan", "sram_counts", "efficiency", "problem_key"]
