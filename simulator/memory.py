"""Memory model: double-buffered SRAM per operand, DRAM channels, prefetch, stalls, drain.

The compute model (``compute.FoldPlan``) says which lines each fold reads from the ifmap and
filter buffers and writes to the ofmap buffer, and at which (stall-free) array cycle. This
module groups them into DRAM transfer *blocks* (``plan_memory``) and times the blocks against
the DRAM channel(s) (``run_events``). The rules below are the specification; the per-cycle
reference engine (``engine_ref``) implements them independently and the tests check both
agree on every counter.

Buffers (capacities in bits: bytes * 8; elements are a_bits (ifmap), w_bits (+2 index bits
for 2:4) (filter), a_bits (ofmap outputs), 32 (partial sums)):

* **Resident**: an operand whose distinct elements fit the whole buffer is fetched once. Its
  tiles are fetched in first-use order, tile j becoming eligible when tile j-2 is first used
  (tiles 0 and 1 at the layer start); the distinct elements are split over the tiles in
  proportion to their size (a convolution's ifmap: the raw input, not its im2col copy), so a
  tile can carry no new elements: its transfer takes no channel time.
* **Double-buffered** otherwise: each fold's tile is cut into blocks of at most
  ``half // (widest line)`` lines (half = half the buffer). A fold whose tile is the previous
  fold's tile, fetched as one block, reuses it (os filter across row folds, ...); otherwise
  every block is fetched again. Block j goes to half j % 2: its fetch becomes eligible the
  cycle after block j-2's last line was read.
* **Output**: ofmap lines fill one half while the other drains to DRAM. Lines are grouped
  into blocks of ``half // (widest line)`` lines (across folds). The array stalls before
  writing the first line of block j until block j-2 has been drained; block j's drain
  becomes eligible the cycle after its last line is written. lowbit ws / is with several row
  folds accumulate a column fold's partial sums in place: one block per (column fold,
  segment) spanning all its row folds, drained (final outputs only) after the last one.

DRAM: one channel shared by all operands (``DramSpec.ports`` None) or one per operand
(``ports``: ifmap, filter, ofmap). A transfer of b bits takes ceil(b / (8 * bandwidth)) cycles
on its channel; a channel serves one transfer at a time, in order of (eligible cycle, need
cycle, operand ifmap < filter, block); drains of a cycle go before reads. Read data is usable
``latency`` cycles after its transfer ends; a drained half is free when its transfer ends.
``bandwidth_mode = "calc"`` (SCALE-Sim's estimate-bandwidth mode) makes every transfer
instantaneous: nothing stalls, DRAM traffic is still counted.

Timing: the array runs the folds' cycles in order; at an array cycle that needs a block it
stalls until the block is ready (the whole array stops). total = max(last array cycle + 1,
last drain end), counted from the layer start with empty buffers; stall = total - compute
cycles (initial fill, mid-layer stalls and the final output drain).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .compute import PSUM_BITS, FoldPlan, GemmProblem
from .hardware import Profile

READ_OPERANDS = ("ifmap", "filter")
PRIORITY = {"ifmap": 0, "filter": 1}


@dataclass(frozen=True)
class Channel:
    """A DRAM channel: bandwidth in bytes per cycle (exact; None = unbounded) and latency."""

    bandwidth: Fraction | None
    latency: int

    def cycles(self, bits):
        """Cycles a transfer of ``bits`` occupies the channel (int or int64 array)."""
        if self.bandwidth is None:
            return bits * 0
        num, den = self.bandwidth.numerator, self.bandwidth.denominator
        return (bits * den + 8 * num - 1) // (8 * num)


def exact_bandwidth(value: float) -> Fraction:
    """A bandwidth as the exact decimal the user wrote (12.8 -> 64/5, not a binary float)."""
    return Fraction(repr(float(value)))


def channels_for(profile: Profile) -> tuple[tuple[Channel, ...], dict[str, int]]:
    """The channels and which one serves each operand."""
    if profile.bandwidth_mode == "calc":
        return (Channel(None, 0),), {"ifmap": 0, "filter": 0, "ofmap": 0}
    lat = profile.dram.latency
    if profile.dram.ports is not None:
        ops = ("ifmap", "filter", "ofmap")
        return (tuple(Channel(exact_bandwidth(profile.dram.ports[o]), lat) for o in ops),
                {o: i for i, o in enumerate(ops)})
    shared = (Channel(exact_bandwidth(profile.dram.bandwidth), lat),)
    return shared, {"ifmap": 0, "filter": 0, "ofmap": 0}


def element_bits(problem: GemmProblem, operand: str) -> int:
    bits = {"ifmap": problem.a_bits, "filter": problem.filter_bits, "ofmap": problem.out_bits}
    return bits[operand]


def distinct_elems(problem: GemmProblem, operand: str) -> int:
    return problem.a_distinct if operand == "ifmap" else problem.n * problem.red.w_total


def proportional_split(sizes: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over blocks in proportion to ``sizes`` (integers summing to total)."""
    cum = np.cumsum(sizes, dtype=np.int64)
    whole = int(cum[-1])
    if total == whole:
        return sizes.astype(np.int64)
    cut = (cum * total) // whole
    return np.diff(np.concatenate(([0], cut))).astype(np.int64)


@dataclass(frozen=True)
class ReadStream:
    """DRAM fetches of one operand (arrays, one entry per block, in need order)."""

    operand: str
    resident: bool
    lines_per_block: int
    need: np.ndarray     # array cycle of the block's first line
    anchor: np.ndarray   # array cycle after which the fetch is eligible; -1 = layer start
    elems: np.ndarray
    bits: np.ndarray


@dataclass(frozen=True)
class WriteStream:
    """DRAM drains of the ofmap buffer (one entry per block)."""

    accumulate: bool
    lines_per_block: int
    start: np.ndarray    # array cycle of the block's first line write
    end: np.ndarray      # array cycle of its last line write
    elems: np.ndarray
    bits: np.ndarray


@dataclass(frozen=True)
class MemoryPlan:
    cycles: int                          # stall-free array cycles of the GEMM
    reads: tuple[ReadStream, ...]
    write: WriteStream
    channels: tuple[Channel, ...]
    channel_of: dict


def half_bits(profile: Profile, operand: str) -> int:
    return profile.sram_bytes(operand) * 8 // 2


def read_line_max(plan: FoldPlan, problem: GemmProblem, operand: str) -> int:
    """Elements of the widest line the operand's buffer serves (a fold's first line)."""
    d = plan.read_demand(problem, operand)
    return int(np.max(d.elems(problem, 0, 1)))


def line_reason(operand: str, line_bits: int, half: int) -> str:
    return (f"one {operand} line ({line_bits} bits) does not fit half of the {operand} buffer "
            f"({half} bits)")


def psum_reason(half: int, width: int) -> str:
    return (f"ofmap buffer too small: half of it ({half} bits) cannot hold one row of {width} "
            f"32-bit partial sums")


def feasibility(plan: FoldPlan, problem: GemmProblem, profile: Profile) -> str | None:
    """Why this fold plan cannot run in these buffers, or None."""
    for op in READ_OPERANDS:
        bits = element_bits(problem, op)
        if distinct_elems(problem, op) * bits <= profile.sram_bytes(op) * 8:
            continue
        line = read_line_max(plan, problem, op) * bits
        if line > half_bits(profile, op):
            return line_reason(op, line, half_bits(profile, op))
    if not _accumulates(plan):
        line = int(plan.c.max()) * problem.out_bits
        if line > half_bits(profile, "ofmap"):
            return line_reason("ofmap", line, half_bits(profile, "ofmap"))
    return None


def _accumulates(plan: FoldPlan) -> bool:
    return plan.convention == "lowbit" and plan.dataflow != "os" and plan.n_fr > 1


def plan_read(plan: FoldPlan, problem: GemmProblem, profile: Profile, operand: str) -> ReadStream:
    d = plan.read_demand(problem, operand)
    bits = element_bits(problem, operand)
    first = plan.start + d.off  # array cycle of each fold's line 0
    tile = d.elems(problem, 0, d.lines)
    distinct = distinct_elems(problem, operand)
    if distinct * bits <= profile.sram_bytes(operand) * 8:
        _, idx = np.unique(d.key, return_index=True)
        idx = np.sort(idx)
        need = first[idx]
        elems = proportional_split(tile[idx], distinct)
        anchor = np.concatenate(([-1, -1], need[:-2]))[:len(need)]
        return ReadStream(operand, True, 0, need, anchor.astype(np.int64), elems, elems * bits)
    lb = half_bits(profile, operand) // (read_line_max(plan, problem, operand) * bits)
    single = d.lines <= lb
    new = np.ones(plan.folds, dtype=bool)
    new[1:] = ~((d.key[1:] == d.key[:-1]) & single[1:])
    nb = np.where(new, -(-d.lines // lb), 0)
    bf = np.repeat(np.arange(plan.folds), nb)
    bi = np.arange(len(bf)) - np.repeat(np.cumsum(nb) - nb, nb)
    l0 = bi * lb
    l1 = np.minimum(l0 + lb, d.lines[bf])
    need = first[bf] + l0
    release = first[bf] + l1 - 1
    # a single-block tile stays while the following folds reuse it: released after the last
    run = np.cumsum(new) - 1
    run_last = np.flatnonzero(np.append(new[1:], True))
    last = run_last[run[bf]]
    release = np.where(single[bf], first[last] + d.lines[last] - 1, release)
    elems = d.take(bf).elems(problem, l0, l1)
    anchor = np.concatenate(([-1, -1], release[:-2]))[:len(need)]
    return ReadStream(operand, False, int(lb), need.astype(np.int64), anchor.astype(np.int64),
                      elems.astype(np.int64), elems.astype(np.int64) * bits)


def plan_write(plan: FoldPlan, problem: GemmProblem, profile: Profile) -> WriteStream:
    ob = problem.out_bits
    if _accumulates(plan):
        n = plan.n_fr
        f0 = np.arange(0, plan.folds, n)
        fl = f0 + n - 1
        start = plan.start[f0] + plan.out_off[f0]
        end = plan.start[fl] + plan.out_off[fl] + plan.t[fl] - 1
        elems = plan.t[f0] * plan.c[f0]
        return WriteStream(True, 0, start, end, elems, elems * ob)
    lines = plan.out_lines()
    lb = half_bits(profile, "ofmap") // (int(plan.c.max()) * ob)
    cum_lines = np.cumsum(lines)
    cum_elems = np.cumsum(lines * plan.c)
    total = int(cum_lines[-1])
    g0 = np.arange(0, total, lb)
    g1 = np.minimum(g0 + lb, total) - 1

    def locate(g):
        f = np.searchsorted(cum_lines, g, side="right")
        i = g - (cum_lines[f] - lines[f])
        return f, i

    f_a, i_a = locate(g0)
    f_b, i_b = locate(g1)
    start = plan.start[f_a] + plan.out_off[f_a] + i_a
    end = plan.start[f_b] + plan.out_off[f_b] + i_b
    before = cum_elems - lines * plan.c
    e0 = before[f_a] + i_a * plan.c[f_a]
    e1 = before[f_b] + (i_b + 1) * plan.c[f_b]
    elems = (e1 - e0).astype(np.int64)
    return WriteStream(False, int(lb), start.astype(np.int64), end.astype(np.int64), elems,
                       elems * ob)


def plan_memory(plan: FoldPlan, problem: GemmProblem, profile: Profile) -> MemoryPlan:
    """DRAM blocks of one GEMM (call ``feasibility`` first)."""
    chans, chan_of = channels_for(profile)
    reads = tuple(plan_read(plan, problem, profile, op) for op in READ_OPERANDS)
    return MemoryPlan(plan.cycles, reads, plan_write(plan, problem, profile), chans, chan_of)


@dataclass(frozen=True)
class MemoryResult:
    total_cycles: int
    stall_cycles: int
    dram_reads: dict      # operand -> elements
    dram_read_bits: dict
    dram_writes: int      # ofmap elements
    dram_write_bits: int


def run_events(mp: MemoryPlan) -> MemoryResult:
    """Time the blocks (see the module docstring): an event loop over blocks, not cycles."""
    counts = {s.operand: int(s.elems.sum()) for s in mp.reads}
    bits = {s.operand: int(s.bits.sum()) for s in mp.reads}
    w = mp.write
    base = MemoryResult(mp.cycles, 0, counts, bits, int(w.elems.sum()), int(w.bits.sum()))
    if all(ch.bandwidth is None for ch in mp.channels):
        return base  # instantaneous transfers: every block is ready before it is needed
    total = _event_loop(mp)
    return MemoryResult(total, total - mp.cycles, counts, bits, base.dram_writes,
                        base.dram_write_bits)


# event kinds: 0 = read block needed, 1 = write block starts (phase 0); 2 = read fetch
# eligible, 3 = write drain eligible (phase 1)
def _event_loop(mp: MemoryPlan) -> int:
    cyc, phase, key2, prio, kind, stream, idx = [], [], [], [], [], [], []
    dur, ready, lat, chan = [], [], [], []
    for s, rs in enumerate(mp.reads):
        ch = mp.channel_of[rs.operand]
        n = len(rs.need)
        dur.append(mp.channels[ch].cycles(rs.bits).tolist())
        ready.append([0] * n)
        lat.append(mp.channels[ch].latency)
        chan.append(ch)
        j = np.arange(n)
        cyc += [rs.need, rs.anchor]
        phase += [np.zeros(n), np.ones(n)]
        key2 += [rs.need, rs.need]
        prio += [np.full(n, PRIORITY[rs.operand])] * 2
        kind += [np.zeros(n), np.full(n, 2)]
        stream += [np.full(n, s)] * 2
        idx += [j, j]
    wr = mp.write
    nw = len(wr.start)
    wch = mp.channel_of["ofmap"]
    wdur = mp.channels[wch].cycles(wr.bits).tolist()
    j = np.arange(2, nw)
    cyc += [wr.start[2:], wr.end]
    phase += [np.zeros(len(j)), np.ones(nw)]
    key2 += [wr.start[2:], wr.end]
    prio += [np.full(len(j), -1), np.full(nw, -1)]
    kind += [np.ones(len(j)), np.full(nw, 3)]
    stream += [np.full(len(j), -1), np.full(nw, -1)]
    idx += [j, np.arange(nw)]
    cols = [np.concatenate(x).astype(np.int64) for x in (cyc, phase, key2, prio, kind, stream, idx)]
    order = np.lexsort((cols[6], cols[3], cols[2], cols[1], cols[0]))
    ev_cyc, _, _, _, ev_kind, ev_stream, ev_idx = (c[order].tolist() for c in cols)

    free = [0] * len(mp.channels)
    drain_end = [0] * nw
    last_a, last_w = -1, -1
    for a, k, s, i in zip(ev_cyc, ev_kind, ev_stream, ev_idx):
        if a != last_a:
            last_w += a - last_a
            last_a = a
        if k == 0:
            if ready[s][i] > last_w:
                last_w = ready[s][i]
        elif k == 1:
            if drain_end[i - 2] > last_w:
                last_w = drain_end[i - 2]
        elif k == 2:
            ch = chan[s]
            st = free[ch] if free[ch] > last_w + 1 else last_w + 1
            free[ch] = st + dur[s][i]
            ready[s][i] = free[ch] + lat[s]
        else:
            st = free[wch] if free[wch] > last_w + 1 else last_w + 1
            free[wch] = drain_end[i] = st + wdur[i]
    last_w += mp.cycles - 1 - last_a
    return max(last_w + 1, max(drain_end) if drain_end else 0)


__all__ = ["Channel", "MemoryPlan", "MemoryResult", "ReadStream", "WriteStream",
           "channels_for", "exact_bandwidth", "element_bits", "distinct_elems", "feasibility",
           "plan_memory", "plan_read", "plan_write", "run_events", "proportional_split",
           "half_bits", "line_reason", "psum_reason", "PSUM_BITS"]
