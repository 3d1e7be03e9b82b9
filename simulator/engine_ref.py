"""The per-cycle reference engine: steps the array and the DRAM channels cycle by cycle.

Slow (a Python loop over every cycle and every PE of every fold): small layers only. It is
the executable definition the fast engine (``engine``) is tested against, so it derives
everything from first principles rather than from the fast engine's closed forms:

* fold timing from per-PE schedules (lowbit: which cycle each PE does each reduction step,
  when each accumulator / partial sum leaves the bottom edge) or, for the scalesim
  convention, from SCALE-Sim-style demand matrices (idle rows, padding, skew) built per fold;
* SRAM counts by adding up the elements of every line read or written as the cycles run;
* DRAM blocks by walking the lines greedily (``memory``'s rules, re-implemented with
  explicit tile identities);
* timing by stepping wall-clock cycles: each cycle every idle channel starts the eligible
  transfer with the smallest (eligible cycle, need cycle, operand, block) key and moves
  ``bandwidth`` bytes of it (exact fractions); then the array executes its next cycle if
  every block that cycle needs has arrived and the ofmap half it writes into is drained,
  else it stalls.

Only small building blocks are shared with the fast engine: the reduction (``Reduction``),
buffer capacities and channel parameters, and the proportional split of a resident
operand's distinct elements over its tiles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from .compute import PSUM_BITS, GemmProblem
from .hardware import Profile
from .memory import (PRIORITY, channels_for, distinct_elems, element_bits, half_bits,
                     line_reason, proportional_split, psum_reason)
from .stats import GemmResult


@dataclass
class _Line:
    cycle: int       # array cycle (stall-free, whole GEMM) at which the buffer serves it
    elems: int
    tile: tuple      # identity of the operand elements of the line's tile


@dataclass
class _Fold:
    fc: int
    seg: int
    fr: int
    r: int
    c: int
    t: int
    s0: int
    length: int
    macs: int
    lines: dict = field(default_factory=dict)   # operand -> list of _Line (reads)
    out: list = field(default_factory=list)     # (cycle, elems) output lines
    ifmap_port: int = 0                          # compat: SCALE-Sim demand entries
    filter_port: int = 0
    ofmap_port: int = 0
    util_cycles: int = 0                         # compat: SCALE-Sim's per-fold util length


def _step_width(total: int, step: int, s: int) -> int:
    return max(0, min(step, total - s * step))


class _Layer:
    """Folds of one GEMM with per-cycle line schedules (built with explicit loops)."""

    def __init__(self, problem: GemmProblem, profile: Profile, dataflow: str, convention: str):
        self.p, self.prof, self.df, self.conv = problem, profile, dataflow, convention
        self.R, self.C = profile.rows, profile.cols
        red = problem.red
        self.aw = [_step_width(red.a_total, red.a_step, s) for s in range(red.steps)]
        self.ww = [_step_width(red.w_total, red.w_step, s) for s in range(red.steps)]
        space = {"os": (problem.m, problem.n, red.steps), "ws": (red.steps, problem.n, problem.m),
                 "is": (red.steps, problem.m, problem.n)}[dataflow]
        self.sr, self.sc, self.tt = space
        self.n_fr = math.ceil(self.sr / self.R)
        self.n_fc = math.ceil(self.sc / self.C)
        seg = self.tt
        self.reason = ""
        if convention == "lowbit" and dataflow != "os" and self.n_fr > 1:
            width = min(self.C, self.sc) * PSUM_BITS
            seg = min(self.tt, half_bits(profile, "ofmap") // width)
            if seg == 0:
                self.reason = psum_reason(half_bits(profile, "ofmap"), min(self.C, self.sc))
                return
        self.seg = seg
        self.folds: list[_Fold] = []
        cursor = 0
        for fc in range(self.n_fc):
            for sg in range(math.ceil(self.tt / seg)):
                for fr in range(self.n_fr):
                    f = self._fold(fc, sg, fr, cursor)
                    self.folds.append(f)
                    cursor += f.length
        self.cycles = cursor

    # -- one fold ------------------------------------------------------------------------
    def _fold(self, fc, sg, fr, base):
        R, C = self.R, self.C
        r = min(R, self.sr - fr * R)
        c = min(C, self.sc - fc * C)
        t = min(self.seg, self.tt - sg * self.seg)
        s0 = fr * R if self.df != "os" else 0
        f = _Fold(fc, sg, fr, r, c, t, s0, 0, 0)
        if self.conv == "lowbit":
            self._lowbit_schedule(f, base)
        else:
            self._scalesim_schedule(f, base)
        return f

    def _tiles(self, f):
        """Identity of each operand's tile: (matrix, rows of it, columns of it)."""
        R, C, S = self.R, self.C, self.p.red.steps
        if self.df == "os":
            a = ("A", (f.fr * R, f.fr * R + f.r), (0, S))
            b = ("B", (0, S), (f.fc * C, f.fc * C + f.c))
        elif self.df == "ws":
            t0 = f.seg * self.seg
            a = ("A", (t0, t0 + f.t), (f.s0, f.s0 + f.r))
            b = ("B", (f.s0, f.s0 + f.r), (f.fc * C, f.fc * C + f.c))
        else:
            t0 = f.seg * self.seg
            a = ("A", (f.fc * C, f.fc * C + f.c), (f.s0, f.s0 + f.r))
            b = ("B", (f.s0, f.s0 + f.r), (t0, t0 + f.t))
        return a, b

    def _lowbit_schedule(self, f, base):
        R, r, c, t = self.R, f.r, f.c, f.t
        a_tile, b_tile = self._tiles(f)
        events = []   # every cycle something happens in the fold
        macs = 0
        if self.df == "os":
            # SRAM line j at cycle j; skew buffers: PE(i, jj) does step s at i + jj + s
            f.lines["ifmap"] = [_Line(j, r * self.aw[j], a_tile) for j in range(t)]
            f.lines["filter"] = [_Line(j, c * self.ww[j], b_tile) for j in range(t)]
            exit_row = {}
            for i in range(r):
                for jj in range(c):
                    last = i + jj + t - 1
                    events.append(last)
                    macs += sum(self.ww)
                    # the column shifts out once its bottom used PE (row r-1) is done
                    col_done = (r - 1) + jj + t - 1
                    ex = col_done + (R - i)
                    exit_row[i] = max(exit_row.get(i, -1), ex)
            for i in sorted(exit_row, key=lambda i: exit_row[i]):
                f.out.append((exit_row[i], c))
                events.append(exit_row[i])
        else:
            stat, strm = ("filter", "ifmap") if self.df == "ws" else ("ifmap", "filter")
            stat_w = self.ww if stat == "filter" else self.aw
            strm_w = self.aw if strm == "ifmap" else self.ww
            stat_tile = b_tile if stat == "filter" else a_tile
            strm_tile = a_tile if strm == "ifmap" else b_tile
            f.lines[stat] = [_Line(i, c * stat_w[f.s0 + i], stat_tile) for i in range(r)]
            per_line = sum(strm_w[f.s0 + i] for i in range(r))
            f.lines[strm] = [_Line(r + j, per_line, strm_tile) for j in range(t)]
            out_time = {}
            for j in range(t):
                for i in range(r):
                    for jj in range(c):
                        events.append(r + j + i + jj)
                        macs += self.ww[f.s0 + i]
                for jj in range(c):
                    ex = r + j + jj + R - 1    # leaves the bottom edge after all R rows
                    out_time[j] = max(out_time.get(j, -1), ex)
            for j in range(t):
                f.out.append((out_time[j], c))
                events.append(out_time[j])
        f.length = max(events) + 1
        f.macs = macs
        for lines in f.lines.values():
            for ln in lines:
                ln.cycle += base
        f.out = [(cy + base, e) for cy, e in f.out]

    def _scalesim_schedule(self, f, base):
        """SCALE-Sim v3.0.0's per-fold demand matrices (1 = a valid request, 0 = idle)."""
        R, C, r, c, t = self.R, self.C, f.r, f.c, f.t
        a_tile, b_tile = self._tiles(f)

        def skew(m):
            rows, cols = m.shape
            out = np.zeros((rows + cols - 1, cols), dtype=np.int64)
            for k in range(cols):
                out[k:k + rows, k] = m[:, k]
            return out

        def block(h, w, vh, vw, row_weight=None, col_weight=None):
            """h x w demand rows; the vh x vw corner holds valid requests, each weighted by
            the elements it carries (its reduction step's width)."""
            m = np.zeros((h, w), dtype=np.int64)
            m[:vh, :vw] = 1
            if row_weight is not None:
                m[:vh, :vw] *= np.asarray(row_weight, dtype=np.int64)[:, None]
            if col_weight is not None:
                m[:vh, :vw] *= np.asarray(col_weight, dtype=np.int64)[None, :]
            return m

        def idle(h, w):
            return np.zeros((h, w), dtype=np.int64)

        red_s = list(range(f.s0, f.s0 + r))
        if self.df == "os":
            ifm = skew(np.vstack([block(t, R, t, r, row_weight=self.aw[:t]), idle(C - 1, R)]))
            fil = skew(np.vstack([block(t, C, t, c, row_weight=self.ww[:t]), idle(R - 1, C)]))
            core = np.flip(block(R, C, r, c), 0)
            ofm_pre = np.vstack([idle(t - 1, C), core])
            util_cycles = ofm_pre.shape[0] + ofm_pre.shape[1] - 1
            ofm = skew(ofm_pre)
            ofmap_port = int(ofm.sum()) + R + C            # SCALE-Sim bug 3: + rows + cols
            macs = int(core.sum()) * sum(self.ww)
        else:
            stat_w = self.ww if self.df == "ws" else self.aw
            strm_w = self.aw if self.df == "ws" else self.ww
            stat_rows = block(R, C, r, c, row_weight=[stat_w[s] for s in red_s])
            stat_m = np.vstack([np.flip(stat_rows, 0), idle(R + C + t - 2, C)])
            util_cycles = stat_m.shape[0] + stat_m.shape[1] - 1   # 2R + 2C + t - 3 (bug 4)
            strm_m = skew(np.vstack([idle(R, R),
                                     block(t, R, t, r, col_weight=[strm_w[s] for s in red_s]),
                                     idle(C - 1, R)]))
            ofm = skew(np.vstack([idle(2 * R - 1, C), block(t, C, t, c)]))
            ofmap_port = int(ofm.sum())
            macs = t * c * sum(self.ww[s] for s in red_s)
            ifm, fil = (strm_m, stat_m) if self.df == "ws" else (stat_m, strm_m)
        assert ifm.shape[0] == fil.shape[0] == ofm.shape[0]
        f.length = ifm.shape[0]
        f.util_cycles = util_cycles
        f.ifmap_port, f.filter_port, f.ofmap_port = int(ifm.sum()), int(fil.sum()), ofmap_port
        f.macs = macs
        # the memory model's view of SCALE-Sim's fold: the same line order as lowbit, at
        # SCALE-Sim's cycles (stationary lines in the last r of R load rows)
        if self.df == "os":
            f.lines["ifmap"] = [_Line(base + j, r * self.aw[j], a_tile) for j in range(t)]
            f.lines["filter"] = [_Line(base + j, c * self.ww[j], b_tile) for j in range(t)]
            f.out = [(base + t - 1 + R - r + i, c) for i in range(r)]
        else:
            stat, strm = ("filter", "ifmap") if self.df == "ws" else ("ifmap", "filter")
            stat_w = self.ww if stat == "filter" else self.aw
            strm_w = self.aw if strm == "ifmap" else self.ww
            f.lines[stat] = [_Line(base + R - r + i, c * stat_w[f.s0 + i],
                                   b_tile if stat == "filter" else a_tile) for i in range(r)]
            per = sum(strm_w[f.s0 + i] for i in range(r))
            f.lines[strm] = [_Line(base + R + j, per, a_tile if strm == "ifmap" else b_tile)
                             for j in range(t)]
            f.out = [(base + 2 * R - 1 + j, c) for j in range(t)]


# -- DRAM blocks, by walking the lines -------------------------------------------------------
@dataclass
class _Block:
    need: int
    release: int
    elems: int
    anchor: int = -1
    bits: int = 0


def _read_blocks(layer: _Layer, operand: str) -> tuple[list[_Block], bool]:
    p, prof = layer.p, layer.prof
    bits = element_bits(p, operand)
    per_fold = [f.lines[operand] for f in layer.folds]
    if distinct_elems(p, operand) * bits <= prof.sram_bytes(operand) * 8:
        seen, blocks = set(), []
        for lines in per_fold:
            tile = lines[0].tile
            if tile in seen:
                continue
            seen.add(tile)
            blocks.append(_Block(lines[0].cycle, lines[-1].cycle, sum(ln.elems for ln in lines)))
        split = proportional_split(np.array([b.elems for b in blocks]), distinct_elems(p, operand))
        for j, b in enumerate(blocks):
            b.elems = int(split[j])
            b.bits = b.elems * bits
            b.anchor = blocks[j - 2].need if j >= 2 else -1
        return blocks, True
    widest = max(ln.elems for lines in per_fold for ln in lines)
    lb = half_bits(prof, operand) // (widest * bits)
    blocks: list[_Block] = []
    prev_tile, prev_single = None, False
    for lines in per_fold:
        tile = lines[0].tile
        single = len(lines) <= lb
        if tile == prev_tile and prev_single and single:
            blocks[-1].release = lines[-1].cycle          # reuse: keep it until this fold ends
            continue
        for i in range(0, len(lines), lb):
            chunk = lines[i:i + lb]
            blocks.append(_Block(chunk[0].cycle, chunk[-1].cycle, sum(ln.elems for ln in chunk)))
        prev_tile, prev_single = tile, single
    for j, b in enumerate(blocks):
        b.bits = b.elems * bits
        b.anchor = blocks[j - 2].release if j >= 2 else -1
    return blocks, False


def _write_blocks(layer: _Layer) -> list[_Block]:
    p, prof = layer.p, layer.prof
    ob = p.out_bits
    if layer.conv == "lowbit" and layer.df != "os" and layer.n_fr > 1:
        blocks = []
        for f in layer.folds:
            if f.fr == 0:
                blocks.append(_Block(f.out[0][0], -1, f.t * f.c))
            if f.fr == layer.n_fr - 1:
                blocks[-1].release = f.out[-1][0]
        for b in blocks:
            b.bits = b.elems * ob
        return blocks
    lines = [ln for f in layer.folds for ln in f.out]
    lb = half_bits(prof, "ofmap") // (max(e for _, e in lines) * ob)
    blocks = []
    for i in range(0, len(lines), lb):
        chunk = lines[i:i + lb]
        elems = sum(e for _, e in chunk)
        blocks.append(_Block(chunk[0][0], chunk[-1][0], elems, bits=elems * ob))
    return blocks


def _feasible(layer: _Layer) -> str:
    p, prof = layer.p, layer.prof
    for op in ("ifmap", "filter"):
        bits = element_bits(p, op)
        if distinct_elems(p, op) * bits <= prof.sram_bytes(op) * 8:
            continue
        widest = max(ln.elems for f in layer.folds for ln in f.lines[op]) * bits
        if widest > half_bits(prof, op):
            return line_reason(op, widest, half_bits(prof, op))
    if not (layer.conv == "lowbit" and layer.df != "os" and layer.n_fr > 1):
        widest = max(e for f in layer.folds for _, e in f.out) * p.out_bits
        if widest > half_bits(prof, "ofmap"):
            return line_reason("ofmap", widest, half_bits(prof, "ofmap"))
    return ""


@dataclass
class _Transfer:
    eligible: int
    key: tuple
    bits: int
    done: object          # callback(end_cycle)


def _step(layer: _Layer, reads: dict, writes: list[_Block]) -> int:
    """Wall-clock cycle loop; returns the total cycles (last array cycle or drain end + 1)."""
    chans, chan_of = channels_for(layer.prof)
    pending = [[] for _ in chans]
    current = [None for _ in chans]     # [transfer, bits left]
    ready: dict = {}
    drained: dict = {}
    needs, anchors, wstart, wend = {}, {}, {}, {}
    for op, blocks in reads.items():
        for j, b in enumerate(blocks):
            needs.setdefault(b.need, []).append((op, j))
            anchors.setdefault(b.anchor, []).append((op, j))
    for j, b in enumerate(writes):
        if j >= 2:
            wstart.setdefault(b.need, []).append(j)
        wend.setdefault(b.release, []).append(j)

    def read_done(op, j, lat):
        def done(end):
            ready[(op, j)] = end + lat
        return done

    def drain_done(j):
        def done(end):
            drained[j] = end
        return done

    def enqueue_reads(items, eligible):
        for op, j in items:
            b = reads[op][j]
            ch = chan_of[op]
            pending[ch].append(_Transfer(eligible, (eligible, b.need, PRIORITY[op], j), b.bits,
                                         read_done(op, j, chans[ch].latency)))

    def enqueue_drains(items, eligible):
        ch = chan_of["ofmap"]
        for j in items:
            b = writes[j]
            pending[ch].append(_Transfer(eligible, (eligible, b.release, -1, j), b.bits,
                                         drain_done(j)))

    enqueue_reads(anchors.get(-1, []), 0)
    a, t, last_exec = 0, 0, -1
    n_drains = len(writes)
    while a < layer.cycles or len(drained) < n_drains:
        for ch, spec in enumerate(chans):
            while True:
                if current[ch] is None:
                    elig = [x for x in pending[ch] if x.eligible <= t]
                    if not elig:
                        break
                    x = min(elig, key=lambda x: x.key)
                    pending[ch].remove(x)
                    if spec.bandwidth is None or x.bits == 0:   # done the cycle it starts
                        x.done(t)
                        continue
                    current[ch] = [x, Fraction(x.bits)]
                x, left = current[ch]
                left -= 8 * spec.bandwidth
                if left <= 0:
                    x.done(t + 1)
                    current[ch] = None
                else:
                    current[ch][1] = left
                break
        if a < layer.cycles:
            ok = all(ready.get(key, math.inf) <= t for key in needs.get(a, []))
            ok = ok and all(drained.get(j - 2, math.inf) <= t for j in wstart.get(a, []))
            if ok:
                enqueue_drains(wend.get(a, []), t + 1)
                enqueue_reads(anchors.get(a, []), t + 1)
                last_exec = t
                a += 1
        t += 1
    return max(last_exec + 1, max(drained.values(), default=0))


def simulate_gemm_ref(problem: GemmProblem, profile: Profile, dataflow: str,
                      convention: str = "lowbit") -> GemmResult:
    """One GEMM instance, cycle by cycle (same record and meaning as ``engine.simulate_gemm``)."""
    layer = _Layer(problem, profile, dataflow, convention)
    if layer.reason:
        return GemmResult(False, layer.reason, notes=problem.notes)
    reason = _feasible(layer)
    if reason:
        return GemmResult(False, reason, notes=problem.notes)
    reads, dram = {}, {}
    for op in ("ifmap", "filter"):
        reads[op], _ = _read_blocks(layer, op)
        dram[op] = (sum(b.elems for b in reads[op]), sum(b.bits for b in reads[op]))
    writes = _write_blocks(layer)
    total_mem = _step(layer, reads, writes)

    # SRAM counts: add up every line served, cycle by cycle
    by_cycle: dict = {}
    for f in layer.folds:
        for op, lines in f.lines.items():
            for ln in lines:
                by_cycle.setdefault(ln.cycle, []).append((op, ln.elems))
    s_if = s_fi = 0
    for cycle in range(layer.cycles):
        for op, e in by_cycle.get(cycle, []):
            if op == "ifmap":
                s_if += e
            else:
                s_fi += e
    p = problem
    ob = p.out_bits
    w_elems = w_bits = r_elems = 0
    for f in layer.folds:
        n = sum(e for _, e in f.out)
        w_elems += n
        if convention == "lowbit" and dataflow != "os" and layer.n_fr > 1:
            w_bits += n * (ob if f.fr == layer.n_fr - 1 else PSUM_BITS)
            if f.fr > 0:
                r_elems += n
        else:
            w_bits += n * ob
    R, C = profile.rows, profile.cols
    mac_total = sum(f.macs for f in layer.folds)
    slots = R * C * p.red.macs_per_pe
    mapping = sum(f.r * f.c for f in layer.folds) / (len(layer.folds) * R * C)
    if convention == "scalesim":
        s_if = sum(f.ifmap_port for f in layer.folds)
        s_fi = sum(f.filter_port for f in layer.folds)
        w_elems = sum(f.ofmap_port for f in layer.folds)
        w_bits = w_elems * ob
        r_elems = 0
        compute = layer.cycles - 1
        util = sum(f.r * f.c * f.t / (R * C * f.util_cycles)
                   for f in layer.folds) / len(layer.folds)
    else:
        compute = layer.cycles
        util = mac_total / (slots * layer.cycles)
    stall = total_mem - layer.cycles
    total = compute + stall
    return GemmResult(
        True, "", folds=len(layer.folds), compute_cycles=compute, stall_cycles=stall,
        total_cycles=total, macs=mac_total, sram_ifmap_reads=s_if, sram_filter_reads=s_fi,
        sram_ofmap_writes=w_elems, sram_ofmap_reads=r_elems,
        sram_ifmap_bits=s_if * p.a_bits, sram_filter_bits=s_fi * p.filter_bits,
        sram_ofmap_write_bits=w_bits, sram_ofmap_read_bits=r_elems * PSUM_BITS,
        dram_ifmap_reads=dram["ifmap"][0], dram_filter_reads=dram["filter"][0],
        dram_ofmap_writes=sum(b.elems for b in writes), dram_ifmap_bits=dram["ifmap"][1],
        dram_filter_bits=dram["filter"][1], dram_ofmap_bits=sum(b.bits for b in writes),
        pe_slots=slots * compute, mapping_efficiency=mapping, compute_utilization=util,
        overall_utilization=mac_total / (slots * total) if total else 0.0, notes=problem.notes)


__all__ = ["simulate_gemm_ref"]
