"""The hierarchical roofline: per-layer work, traffic per memory level, bound, latency, energy.

For each layer (reduced to its GEMMs, ``Layer.gemms()``) on a device at a precision:

* **Work** W: ops = 2 * M * N * K * count, dense (``lowbit.costs.gemm_cost``); 2:4 sparsity
  changes the ceiling and the weight bytes, not W (vendors quote sparse ceilings in
  dense-equivalent ops).
* **Bytes per level** (the reuse model). Level i (outermost first) is read through the
  capacity S of the level inside it (``tile_bytes`` for the innermost). Per GEMM instance
  with compulsory bytes A (activations; a convolution's raw input, not its im2col copy),
  W (weights or the second activation / KV operand, scales and 2:4 metadata included) and
  O (outputs written once):
    - if the smaller of A and W fits in S / 2, it stays resident while the other streams
      once: traffic = A + W + O (the compulsory traffic of ``lowbit.costs``);
    - otherwise an output-stationary tiling keeps tm x tn 32-bit accumulators in S / 2,
      tm = min(M, floor(sqrt(S / 8))), tn = min(N, floor(S / 8 / tm)); A is read
      ceil(N / tn) times and W ceil(M / tm) times: traffic = A ceil(N/tn) + W ceil(M/tm) + O.
  A level without a finite capacity inside it (none) gets the compulsory traffic.
* **Intensity** I_i = W / bytes_i; **attainable** P_att = min(P * U, min_i I_i * BW_i), with
  P the device's ceiling for the layer's precision (2:4-sparse ceiling for 2:4 layers on a
  device that has one) and U the compute efficiency; the **bound** is "compute" or
  "memory:<level>" (whichever term is smallest).
* **Latency** L = W / P_att, i.e. the seeds' L = W / (P * U) with the memory roofs taken at
  their bandwidth: max(W / (P U), max_i bytes_i / BW_i). U comes, in order of preference,
  from the simulator (``compute_utilization`` of the layer on an NPU profile), a measured
  efficiency (the host profile's ``efficiency`` table written by calibration) or the
  profile default.
* **Energy** = ops * pJ/op(precision) + sum_i bytes_i * pJ/byte(level i).
* **Utilization** = achieved ops/s / P (the fraction of the ceiling used).

Nothing here prints or reads files (profiles come through ``profile_io``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

from lowbit.costs import gemm_cost
from lowbit.simulator.workload import BatchedMatmul, Conv2d, Layer, Workload, as_workload

from .device import Device
from .precision import Precision, compute_for_bits, parse_precision
from .profile_io import get_device

__all__ = ["LayerRoofline", "Totals", "RooflineResult", "analyze", "analyze_layers",
           "gemm_traffic", "ACC_BYTES"]

ACC_BYTES = 4          # accumulator width of the output-stationary tiles
SPARSE_INDEX_BITS = 2  # 2:4 metadata per kept weight


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerRoofline:
    """One layer on one device. Bytes, intensity and time are per memory level name."""

    layer: str
    kind: str
    gemms: tuple[tuple[int, int, int, int], ...]
    precision: str              # the ceiling it runs at (after fallback)
    sparse: bool
    ops: float
    bytes_per_level: Mapping[str, float]
    intensity_per_level: Mapping[str, float]
    peak_ops_s: float
    efficiency: float           # U
    efficiency_source: str      # "simulator", "measured", "default"
    attainable_ops_s: float
    bound: str                  # "compute" or "memory:<level>"
    latency_s: float
    compute_time_s: float       # W / (P U)
    memory_time_s: Mapping[str, float]
    energy_j: float
    utilization: float

    @property
    def bytes(self) -> float:
        """Traffic at the outermost level (DRAM / HBM)."""
        return next(iter(self.bytes_per_level.values()))

    @property
    def intensity(self) -> float:
        """Ops per byte at the outermost level."""
        return next(iter(self.intensity_per_level.values()))

    @property
    def memory_bound(self) -> bool:
        return self.bound != "compute"

    def to_dict(self) -> dict:
        return {
            "layer": self.layer, "kind": self.kind, "gemms": [list(g) for g in self.gemms],
            "precision": self.precision, "sparse": self.sparse, "ops": self.ops,
            "bytes": self.bytes, "intensity": self.intensity,
            "bytes_per_level": dict(self.bytes_per_level),
            "intensity_per_level": dict(self.intensity_per_level),
            "peak_ops_s": self.peak_ops_s, "attainable_ops_s": self.attainable_ops_s,
            "bound": self.bound, "latency_s": self.latency_s,
            "compute_time_s": self.compute_time_s, "memory_time_s": dict(self.memory_time_s),
            "energy_j": self.energy_j, "utilization": self.utilization,
            "efficiency": self.efficiency, "efficiency_source": self.efficiency_source,
        }


@dataclass(frozen=True)
class Totals:
    """The network: sums, and the time split between compute- and memory-bound layers."""

    ops: float
    bytes_per_level: Mapping[str, float]
    latency_s: float
    energy_j: float
    utilization: float
    compute_bound_time_s: float
    memory_bound_time_s: float
    memory_bound_layers: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"ops": self.ops, "bytes": next(iter(self.bytes_per_level.values())),
                "bytes_per_level": dict(self.bytes_per_level), "latency_s": self.latency_s,
                "energy_j": self.energy_j, "utilization": self.utilization,
                "compute_bound_time_s": self.compute_bound_time_s,
                "memory_bound_time_s": self.memory_bound_time_s,
                "memory_bound_layers": list(self.memory_bound_layers)}


@dataclass(frozen=True)
class RooflineResult:
    """``analyze``'s answer: per-layer records, totals, and the LLM figures when relevant."""

    workload: str
    device: Device
    precision: str
    layers: tuple[LayerRoofline, ...]
    total: Totals
    llm: Mapping[str, object] | None = None

    def layer(self, name: str) -> LayerRoofline:
        for rec in self.layers:
            if rec.layer == name:
                return rec
        raise KeyError(name)

    def to_dict(self) -> dict:
        out = {"workload": self.workload, "profile": self.device.name,
               "precision": self.precision,
               "layers": [r.to_dict() for r in self.layers], "total": self.total.to_dict()}
        if self.llm is not None:
            out["llm"] = dict(self.llm)
        return out

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


# --------------------------------------------------------------------------------------------
# The reuse model
# --------------------------------------------------------------------------------------------
def gemm_traffic(m: int, n: int, a_bytes: float, w_bytes: float, o_bytes: float,
                 capacity: float | None) -> float:
    """Bytes one GEMM instance moves through a level read via a buffer of ``capacity``.

    See the module doc: compulsory when the smaller operand fits half the buffer (or the
    capacity is None), else an output-stationary tiling with 32-bit accumulators.
    """
    if capacity is None or min(a_bytes, w_bytes) <= capacity / 2:
        return a_bytes + w_bytes + o_bytes
    slots = max(1.0, capacity / 2 / ACC_BYTES)
    tm = max(1, min(m, int(math.isqrt(int(slots)))))
    tn = max(1, min(n, int(slots // tm)))
    return a_bytes * math.ceil(n / tn) + w_bytes * math.ceil(m / tm) + o_bytes


@dataclass(frozen=True)
class _LayerBits:
    a_bits: float
    w_bits: float          # per stored weight / KV value, scales included
    out_bits: float
    compute: str
    sparse: bool


def _layer_bits(layer: Layer, prec: Precision | None, llm: bool, sparse_all: bool) -> _LayerBits:
    sparse = sparse_all or layer.sparsity.kind == "2:4"
    is_act_matmul = isinstance(layer, BatchedMatmul)
    if prec is None:  # the layer's own integer widths
        compute = compute_for_bits(layer.a_bits, layer.w_bits)
        return _LayerBits(layer.a_bits, layer.w_bits, layer.a_bits, compute,
                          sparse and not is_act_matmul)
    if is_act_matmul:
        if llm:  # attention at fp16 against the KV cache
            return _LayerBits(16, prec.kv_bits_stored(), 16, "fp16", False)
        return _LayerBits(prec.a_bits, prec.a_bits, prec.out_bits, prec.compute, False)
    return _LayerBits(prec.a_bits, prec.weight_bits(), prec.out_bits, prec.compute, sparse)


def _operand_bytes(layer: Layer, gemm, bits: _LayerBits) -> tuple[float, float, float, float]:
    """(ops, A, W, O) of one instance of ``gemm``; the ops from lowbit.costs."""
    ops, _ = gemm_cost(gemm.m, gemm.n, gemm.k)
    if isinstance(layer, Conv2d):  # the raw input, not its im2col copy
        a_elems = layer.in_h * layer.in_w * (layer.in_ch // layer.groups)
    else:
        a_elems = gemm.m * gemm.k
    a = a_elems * bits.a_bits / 8
    if bits.sparse:
        w = math.ceil(gemm.k / 2) * gemm.n * (bits.w_bits + SPARSE_INDEX_BITS) / 8
    else:
        w = gemm.k * gemm.n * bits.w_bits / 8
    o = gemm.m * gemm.n * bits.out_bits / 8
    return float(ops), a, w, o


# --------------------------------------------------------------------------------------------
# analyze
# --------------------------------------------------------------------------------------------

def _simulated_utilization(workload: Workload, device: Device, bits: Sequence[_LayerBits],
                           dataflow: str | None) -> dict[str, tuple[float, str]]:
    """Per layer: (U, source) from the simulator for an NPU device built from a profile."""
    from lowbit.simulator.api import simulate

    layers = []
    for layer, b in zip(workload.layers, bits):
        layers.append(replace(layer, a_bits=max(1, math.ceil(b.a_bits)),
                              w_bits=max(1, int(b.w_bits))))
    stats = simulate(Workload(workload.name, tuple(layers)), device.npu, dataflow=dataflow)
    out = {}
    for s in stats.layers:
        if s.feasible and s.compute_utilization > 0:
            out[s.layer] = (s.compute_utilization, "simulator")
    return out


def _given_utilization(workload: Workload, device: Device,
                       simulated: Mapping[str, float]) -> dict[str, tuple[float, str]]:
    """``simulated`` (layer name -> the simulator's compute utilization) checked against the
    workload; layers it leaves out (infeasible ones) fall back as without a simulation."""
    if device.npu is None:
        raise ValueError(f"simulated: {device.name} is not an NPU profile; only the "
                         f"simulator's profiles have a simulated utilization")
    names = {layer.name for layer in workload.layers}
    unknown = sorted(set(simulated) - names)
    if unknown:
        raise ValueError(f"simulated: layers {unknown[:3]} are not in workload "
                         f"{workload.name!r}")
    out = {}
    for name, u in simulated.items():
        if not 0.0 <= u <= 1.0:
            raise ValueError(f"simulated: utilization of {name!r} is {u}, not in [0, 1]")
        if u > 0:
            out[name] = (float(u), "simulator")
    return out


def analyze_layers(workload: Workload, device: Device, precision: Precision | None, *,
                   llm: bool = False, sparse: bool = False, efficiency: float | None = None,
                   dataflow: str | None = None, simulated: Mapping[str, float] | None = None
                   ) -> tuple[tuple[LayerRoofline, ...], Totals]:
    """The per-layer records and totals of ``workload`` on ``device`` (see ``analyze``)."""
    bits = [_layer_bits(layer, precision, llm, sparse) for layer in workload.layers]
    sim_u: dict[str, tuple[float, str]] = {}
    if efficiency is None and simulated is not None:
        sim_u = _given_utilization(workload, device, simulated)
    elif efficiency is None and device.npu is not None:
        sim_u = _simulated_utilization(workload, device, bits, dataflow)
    levels = device.memory
    records = []
    for layer, b in zip(workload.layers, bits):
        ceiling = device.resolve(b.compute)
        use_sparse = b.sparse and device.has_sparse(b.compute)
        peak = device.peak_ops(b.compute, sparse=use_sparse)
        if efficiency is not None:
            u, u_src = efficiency, "given"
        elif layer.name in sim_u:
            u, u_src = sim_u[layer.name]
        else:
            u, u_src = device.efficiency_for(ceiling)
        ops = 0.0
        traffic = [0.0] * len(levels)
        for g in layer.gemms():
            g_ops, a, w, o = _operand_bytes(layer, g, b)
            ops += g_ops * g.count
            for i in range(len(levels)):
                cap = levels[i + 1].capacity_bytes if i + 1 < len(levels) else device.tile_bytes
                traffic[i] += g.count * gemm_traffic(g.m, g.n, a, w, o, cap)
        t_compute = ops / (peak * u)
        t_mem = {lv.name: traffic[i] / lv.bandwidth for i, lv in enumerate(levels)}
        slowest = max(t_mem, key=t_mem.get)
        latency = max(t_compute, t_mem[slowest])
        bound = "compute" if t_compute >= t_mem[slowest] else f"memory:{slowest}"
        energy_pj = ops * device.op_energy_pj(ceiling) + sum(
            traffic[i] * lv.pj_per_byte for i, lv in enumerate(levels))
        records.append(LayerRoofline(
            layer=layer.name, kind=type(layer).__name__.lower(),
            gemms=tuple((g.m, g.n, g.k, g.count) for g in layer.gemms()),
            precision=ceiling, sparse=use_sparse, ops=ops,
            bytes_per_level={lv.name: traffic[i] for i, lv in enumerate(levels)},
            intensity_per_level={lv.name: ops / traffic[i] for i, lv in enumerate(levels)},
            peak_ops_s=peak, efficiency=u, efficiency_source=u_src,
            attainable_ops_s=ops / latency, bound=bound, latency_s=latency,
            compute_time_s=t_compute, memory_time_s=t_mem, energy_j=energy_pj * 1e-12,
            utilization=ops / latency / peak))
    return tuple(records), _totals(records, levels)


def _totals(records: Sequence[LayerRoofline], levels) -> Totals:
    ops = sum(r.ops for r in records)
    latency = sum(r.latency_s for r in records)
    slots = sum(r.peak_ops_s * r.latency_s for r in records)
    return Totals(
        ops=ops,
        bytes_per_level={lv.name: sum(r.bytes_per_level[lv.name] for r in records)
                         for lv in levels},
        latency_s=latency, energy_j=sum(r.energy_j for r in records),
        utilization=ops / slots if slots else 0.0,
        compute_bound_time_s=sum(r.latency_s for r in records if not r.memory_bound),
        memory_bound_time_s=sum(r.latency_s for r in records if r.memory_bound),
        memory_bound_layers=tuple(r.layer for r in records if r.memory_bound))


def analyze(workload, profile, precision: str | Precision | None = None, *,
            sparse: bool = False, efficiency: float | None = None,
            dataflow: str | None = None, simulated: Mapping[str, float] | None = None,
            **llm_params) -> RooflineResult:
    """Roofline analysis of a workload on a device: per-layer bound, latency, energy.

    L = W / (P * U) per layer, with P the attainable performance (the compute ceiling or a
    memory roof, whichever binds; see the module doc for the reuse model) and U the compute
    efficiency (simulator > measured > profile default).

    Args:
        workload: a ``Workload``, a ``Layer``, a list of layers, a zoo name, or an LLM name
            ("llama2-7b-decode", "llama2-7b-prefill", "llama2-7b", the same for "llama2-70b":
            see ``lowbit.roofline.llm``).
        profile: a ``Device``, a simulator ``Profile``, or a name: a roofline device
            (h100-sxm, a100-sxm, rtx-4090, jetson-orin-agx, tpu-v4), a simulator NPU
            (tpu-v1, edge-npu-32x32, ...), "host" (the calibrated CPU), or a TOML path.
        precision: "int8", "fp16", "w4a16", "w8a8-kv8", ... (``parse_precision``); None
            keeps each layer's own widths (LLM workloads default to "w16a16").
        sparse: run every weight GEMM 2:4-sparse (2:4 layers always are).
        efficiency: force U for every layer (overrides simulator and profile).
        dataflow: the simulator dataflow for NPU profiles (default: the profile's first).
        simulated: for NPU profiles, per-layer U (layer name -> compute utilization) from a
            ``simulate`` run the caller already made of this workload at these bit widths,
            dataflow and the default convention: skips the roofline's own simulation (a
            sweep simulates every point anyway). Layers left out take the profile default.
        **llm_params: for LLM workloads, ``batch`` (default 1), ``context`` (decode: KV
            length, default 2048) and ``prompt_len`` (prefill, default 512).

    Returns a ``RooflineResult`` (``.layers``, ``.total``, ``.llm`` for LLM workloads). An
    LLM whose weights and KV cache exceed the device memory still gets its figures, with
    ``llm["fits"]`` False and a ``MemoryFitWarning``.

    Example::

        >>> r = analyze("llama2-7b-decode", "h100-sxm", precision="w4a16", batch=1)
        >>> r.llm["tokens_per_s"], r.total.memory_bound_layers[:2]

    Williams, Waterman & Patterson, "Roofline: an insightful visual performance model for
    multicore architectures", CACM 2009 (the model); Ilic et al., "Cache-aware roofline
    model", 2014 (one roof per memory level).
    """
    from . import llm as llm_mod

    device = get_device(profile)
    if isinstance(workload, str) and llm_mod.is_llm_name(workload):
        if simulated is not None:
            raise TypeError("simulated: applies to layer workloads, not LLM workloads")
        return llm_mod.analyze_llm(workload, device, precision, sparse=sparse,
                                   efficiency=efficiency, dataflow=dataflow, **llm_params)
    if llm_params:
        raise TypeError(f"{', '.join(llm_params)}: LLM parameters apply to LLM workloads only "
                        f"({', '.join(llm_mod.LLM_NAMES)})")
    wl = as_workload(workload)
    prec = None if precision is None else parse_precision(precision)
    layers, total = analyze_layers(wl, device, prec, sparse=sparse, efficiency=efficiency,
                                   dataflow=dataflow, simulated=simulated)
    return RooflineResult(wl.name, device, prec.name if prec else "per-layer", layers, total)
