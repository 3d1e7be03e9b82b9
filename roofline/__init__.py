"""lowbit.roofline: the roofline model L = W / (P * U) for any workload on any device.

Parts: ``device`` (the Device record), ``profile_io`` (TOML devices in ``profiles/``, the
simulator's NPU profiles through ``from_npu``, the calibrated host profile), ``precision``
(operand widths), ``model`` (per-layer bound, latency, energy: ``analyze``), ``llm``
(prefill / decode, batch, context, KV cache, device-memory fit) and ``plots`` (matplotlib,
imported on use).

    >>> from lowbit.roofline import analyze
    >>> r = analyze("llama2-7b-decode", "h100-sxm", precision="w4a16")
    >>> r.llm["tokens_per_s"]

Imports stdlib, numpy, matplotlib, ``lowbit.costs`` and ``lowbit.simulator`` only.
"""
from __future__ import annotations

import importlib

from .device import Device, DeviceError, MemoryLevel, PRECISIONS
from .llm import (LLAMA2_7B, LLAMA2_70B, MemoryFitWarning, llm_report, llm_workload, memory_fit,
                  weight_bytes)
from .model import LayerRoofline, RooflineResult, Totals, analyze, gemm_traffic
from .precision import Precision, parse_precision
from .profile_io import (all_names, device_names, from_npu, get_device, host_profile_path,
                         load_device, save_device)

_LAZY = {"plot_roofline": "plots", "plot_breakdown": "plots", "plot_llm_precisions": "plots",
         "plot_tokens_vs_batch": "plots", "plots": None}

__all__ = ["analyze", "llm_report", "llm_workload", "LLAMA2_7B", "LLAMA2_70B", "MemoryFitWarning",
           "memory_fit", "weight_bytes", "Device", "DeviceError",
           "MemoryLevel", "PRECISIONS", "Precision", "parse_precision", "LayerRoofline",
           "RooflineResult", "Totals", "gemm_traffic", "all_names", "device_names", "from_npu",
           "get_device", "host_profile_path", "load_device", "save_device", "plot_roofline",
           "plot_breakdown", "plot_llm_precisions", "plot_tokens_vs_batch"]


def __getattr__(name: str):
    if name in _LAZY:
        mod = importlib.import_module(".plots", __name__)
        value = mod if _LAZY[name] is None else getattr(mod, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
