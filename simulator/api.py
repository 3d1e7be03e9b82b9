"""``simulate``: a workload on a hardware profile -> per-layer and network stats.

Layers reduce to GEMMs (``Layer.gemms()``); each GEMM becomes a ``GemmProblem`` (precision
packing and 2:4 skipping applied, ``compute.make_problem``) and runs through one engine.
A GEMM repeated ``count`` times (conv groups, attention heads) is ``count`` independent runs
back to back, aggregated exactly (every counter times count). Identical GEMMs within one call
are simulated once.
"""
from __future__ import annotations

from .compute import CONVENTIONS, DATAFLOWS, make_problem, problem_key
from .energy import energy_breakdown
from .engine import simulate_gemm
from .engine_ref import simulate_gemm_ref
from .hardware import Profile
from .stats import ENERGY_PARTS, LayerStats, NetworkStats, aggregate, scale_result
from .workload import Layer, as_workload

ENGINES = {"fast": simulate_gemm, "reference": simulate_gemm_ref}

USER_MODE_NOTE = ("scalesim convention in USER bandwidth mode: compute cycles and SRAM counts "
                  "are SCALE-Sim's, stall cycles come from lowbit's memory model")



def _profile(profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, str) or hasattr(profile, "__fspath__"):
        from .profile_io import load_profile
        return load_profile(profile)
    raise TypeError(f"profile must be a Profile, a profile name or a path, "
                    f"got {type(profile).__name__}")


def _layer_stats(layer: Layer, profile: Profile, dataflow: str, convention: str, run,
                 memo: dict) -> LayerStats:
    energy = {p: 0.0 for p in ENERGY_PARTS}
    parts = []
    for gemm in layer.gemms():
        problem = make_problem(gemm, layer, profile)
        key = (problem_key(problem), dataflow, convention)
        if key not in memo:
            memo[key] = run(problem, profile, dataflow, convention)
        res = scale_result(memo[key], gemm.count)
        parts.append((gemm, problem, res))
        for k, v in energy_breakdown(problem, res, profile).items():
            energy[k] += v
    notes = [n for _, p, _ in parts for n in p.notes]
    if convention == "scalesim" and profile.bandwidth_mode == "user":
        notes.append(USER_MODE_NOTE)
    bad = [r.reason for _, _, r in parts if not r.feasible]
    gemms = tuple((g.m, g.n, g.k, g.count) for g, _, _ in parts)
    kind = type(layer).__name__.lower()
    if bad:
        zero = {k: 0 for k in ("folds", "compute_cycles", "stall_cycles", "total_cycles", "macs",
                               "sram_ifmap_reads", "sram_filter_reads", "sram_ofmap_writes",
                               "sram_ofmap_reads", "dram_ifmap_reads", "dram_filter_reads",
                               "dram_ofmap_writes", "dram_ifmap_bytes", "dram_filter_bytes",
                               "dram_ofmap_bytes")}
        return LayerStats(layer=layer.name, kind=kind, dataflow=dataflow, convention=convention,
                          gemms=gemms, feasible=False, reason="; ".join(bad),
                          mapping_efficiency=0.0, compute_utilization=0.0,
                          overall_utilization=0.0, energy={p: 0.0 for p in ENERGY_PARTS},
                          energy_pj=0.0, latency_s=0.0, notes=tuple(dict.fromkeys(notes)), **zero)
    rs = [r for _, _, r in parts]

    def tot(k):
        return sum(getattr(r, k) for r in rs)

    def weighted(k, w):
        den = sum(getattr(r, w) for r in rs)
        return sum(getattr(r, k) * getattr(r, w) for r in rs) / den if den else 0.0

    total = tot("total_cycles")
    return LayerStats(
        layer=layer.name, kind=kind, dataflow=dataflow, convention=convention, gemms=gemms,
        feasible=True, reason="", folds=tot("folds"), compute_cycles=tot("compute_cycles"),
        stall_cycles=tot("stall_cycles"), total_cycles=total, macs=tot("macs"),
        sram_ifmap_reads=tot("sram_ifmap_reads"), sram_filter_reads=tot("sram_filter_reads"),
        sram_ofmap_writes=tot("sram_ofmap_writes"), sram_ofmap_reads=tot("sram_ofmap_reads"),
        dram_ifmap_reads=tot("dram_ifmap_reads"), dram_filter_reads=tot("dram_filter_reads"),
        dram_ofmap_writes=tot("dram_ofmap_writes"),
        dram_ifmap_bytes=-(-tot("dram_ifmap_bits") // 8),
        dram_filter_bytes=-(-tot("dram_filter_bits") // 8),
        dram_ofmap_bytes=-(-tot("dram_ofmap_bits") // 8),
        mapping_efficiency=weighted("mapping_efficiency", "folds"),
        compute_utilization=weighted("compute_utilization", "compute_cycles"),
        overall_utilization=weighted("overall_utilization", "total_cycles"),
        energy=energy, energy_pj=sum(energy.values()), latency_s=total / profile.clock_hz,
        notes=tuple(dict.fromkeys(notes)),
        sram_bits=(tot("sram_ifmap_bits"), tot("sram_filter_bits"),
                   tot("sram_ofmap_write_bits"), tot("sram_ofmap_read_bits")),
        pe_slots=tot("pe_slots"))


def simulate(workload, profile, *, dataflow: str | None = None, convention: str = "lowbit",
             engine: str = "fast") -> NetworkStats:
    """Simulate ``workload`` on ``profile``, layer by layer (each from empty buffers).

    Args:
        workload: a ``Workload``, a ``Layer``, a list of layers, or a zoo name ("resnet18").
        profile: a ``Profile``, a built-in profile name ("edge-npu-32x32") or a TOML path.
        dataflow: "os", "ws" or "is"; None = the profile's first dataflow.
        convention: "lowbit" (default) or "scalesim" (SCALE-Sim v3.0.0's cycle formulas,
            off-by-one, SRAM counts and utilization; see simulator/CONVENTIONS.md).
        engine: "fast" (default) or "reference" (per-cycle; small layers only).

    Returns ``NetworkStats``: ``.layers`` (one ``LayerStats`` each) and ``.total``. A layer
    the profile cannot run is reported with ``feasible = False`` and a ``reason``.

    Example::

        >>> from lowbit.simulator import simulate
        >>> s = simulate("resnet18", "edge-npu-32x32", dataflow="ws")
        >>> s.total.total_cycles, s.total.energy_pj
    """
    wl = as_workload(workload)
    prof = _profile(profile)
    df = prof.dataflow if dataflow is None else dataflow
    if df not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {', '.join(DATAFLOWS)}, got {df!r}")
    if df not in prof.dataflows:
        raise ValueError(f"dataflow {df!r}: profile {prof.name!r} supports "
                         f"{', '.join(prof.dataflows)}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    memo: dict = {}
    layers = tuple(_layer_stats(layer, prof, df, convention, ENGINES[engine], memo)
                   for layer in wl.layers)
    total = aggregate("total", "network", list(layers), prof.clock_hz)
    return NetworkStats(wl.name, prof.name, df, convention, engine, layers, total)


__all__ = ["simulate", "ENGINES"]
