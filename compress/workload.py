"""``to_workload``: a torch model -> a simulator / roofline ``Workload`` (layer shapes,
precisions, sparsity), so any compressed model can be simulated and placed on a roofline.

One layer per counted operation of ``lowbit.compress.trace`` (the same operations and MACs
as ``profile``), in execution order:

* a linear layer (or a matmul against an ``nn.Parameter``) -> ``Gemm(m, n, k)``, m = all
  leading dims of its input;
* a 2-D convolution with batch 1, equal strides and equal paddings along H and W and no
  dilation -> ``Conv2d`` (the simulator's per-image convolution); any other convolution
  (batch > 1, 1-D / 3-D, dilation, uneven stride or padding, transposed) -> its im2col
  GEMM, ``Gemm(m = N*prod(out size), n = Cout/groups, k = (Cin/groups)*prod(kernel))``
  (transposed: ``m = N*prod(in size), n = (Cout/groups)*prod(kernel), k = Cin/groups``),
  one per group (``name.g0``, ``name.g1``, ...) when groups > 1;
* an activation x activation matmul (attention scores and context, inside
  ``nn.MultiheadAttention`` or ``F.scaled_dot_product_attention`` too) -> ``BatchedMatmul``.

Precisions: a layer of a module defining ``lowbit_storage`` gets ``a_bits = act_bits`` and
``w_bits = ceil(weight_bits)`` (attention matmuls in such a module: ``a_bits`` for both
operands); any other layer its tensors' dtype widths (fp32: 32). Sparsity: from
``lowbit_storage`` (``sparsity_kind`` "2:4" -> ``Sparsity("2:4")``, "unstructured" ->
density 1 - sparsity); float layers are dense (their storage is dense whatever zeros the
weights hold). A module called several times contributes one layer per call (``name#2``...).
"""
from __future__ import annotations

import math

from torch import nn

from lowbit.simulator.workload import (DENSE, BatchedMatmul, Conv2d, Gemm, Layer, Sparsity,
                                       Workload)

from .trace import ConvOp, GemmOp, MatmulOp, StorageInfo, tensors_of, trace_model

__all__ = ["to_workload"]


def _sparsity(info: StorageInfo | None) -> Sparsity:
    if info is None or info.sparsity_kind == "dense":
        return DENSE
    if info.sparsity_kind == "2:4":
        return Sparsity("2:4", 0.5)
    return Sparsity("unstructured", 1.0 - info.sparsity)


def _conv2d(op: ConvOp, common: dict) -> Conv2d | None:
    """The simulator's Conv2d when it reproduces the op exactly, else None."""
    if (op.transposed or len(op.kernel) != 2 or op.batch != 1 or op.dilation != (1, 1)
            or op.stride[0] != op.stride[1]):
        return None
    if isinstance(op.padding, str):  # "valid" or "same": recover the integer padding
        pads = (0, 0) if op.padding == "valid" else tuple((k - 1) // 2 for k in op.kernel)
    else:
        pads = op.padding
    if pads[0] != pads[1]:
        return None
    layer = Conv2d(op.name, in_h=op.in_size[0], in_w=op.in_size[1], in_ch=op.in_ch,
                   out_ch=op.out_ch, kernel_h=op.kernel[0], kernel_w=op.kernel[1],
                   stride=op.stride[0], padding=pads[0], groups=op.groups, bias=op.bias,
                   **common)
    return layer if (layer.out_h, layer.out_w) == op.out_size else None


def _conv_layers(op: ConvOp, common: dict) -> list[Layer]:
    layer = _conv2d(op, common)
    if layer is not None:
        return [layer]
    cin_g, cout_g = op.in_ch // op.groups, op.out_ch // op.groups
    kernel = math.prod(op.kernel)
    if op.transposed:
        m, n, k = op.batch * math.prod(op.in_size), cout_g * kernel, cin_g
    else:
        m, n, k = op.batch * math.prod(op.out_size), cout_g, cin_g * kernel
    if op.groups == 1:
        return [Gemm(op.name, m=m, n=n, k=k, bias=op.bias, **common)]
    return [Gemm(f"{op.name}.g{g}", m=m, n=n, k=k, bias=op.bias, **common)
            for g in range(op.groups)]


def to_workload(model: nn.Module, example_input, *, name: str | None = None) -> Workload:
    """The simulator workload of ``model`` on ``example_input`` (see the module doc).

    Every layer's MACs equal the formula ``profile`` uses, so ``to_workload(m, x).macs ==
    profile(m, x).macs`` for every model whose MACs are all in counted operations.

    Args:
        model: any ``torch.nn.Module`` (run once in eval mode, no gradients, unmodified).
        example_input: one input tensor or a tuple of positional arguments; use batch 1 to
            get the simulator's per-image ``Conv2d`` layers.
        name: the workload's name (default: the model's class name).

    Example::

        >>> from lowbit.simulator import simulate
        >>> from lowbit.roofline import analyze
        >>> wl = to_workload(get_model("digits-cnn"), torch.zeros(1, 1, 8, 8))
        >>> simulate(wl, "edge-npu-32x32").total.latency_s
        >>> analyze(wl, "h100-sxm").total.latency_s
    """
    trace = trace_model(model, example_input)
    layers: list[Layer] = []
    for op in trace.ops:
        info = trace.storage[op.owner]
        if info is not None:
            a_bits = info.act_bits
            w_bits = a_bits if isinstance(op, MatmulOp) else max(1, math.ceil(info.weight_bits))
        else:
            a_bits, w_bits = op.a_bits, op.w_bits
        sparsity = DENSE if isinstance(op, MatmulOp) else _sparsity(info)
        common = {"a_bits": a_bits, "w_bits": w_bits, "sparsity": sparsity}
        if isinstance(op, ConvOp):
            layers += _conv_layers(op, common)
        elif isinstance(op, GemmOp):
            layers.append(Gemm(op.name, m=op.m, n=op.n, k=op.k, bias=op.bias, **common))
        else:
            layers.append(BatchedMatmul(op.name, batch=op.batch, m=op.m, n=op.n, k=op.k,
                                        **common))
    if not layers:
        raise ValueError(f"model: {type(model).__name__} does no counted operation (no "
                         f"Linear, Conv or matmul) on this input; nothing to simulate")
    # weights outside the layers (norms, embeddings, positions) -> Workload.extra_params
    in_layers = {op.owner for op in trace.ops if not isinstance(op, MatmulOp)}
    seen = {id(t) for row in in_layers for _, t, _ in tensors_of(trace, row)}
    extra = 0
    for row in trace.rows:
        if row not in in_layers:
            for _, t, is_param in tensors_of(trace, row):
                if is_param and id(t) not in seen:
                    seen.add(id(t))
                    extra += t.numel()
    return Workload(name or type(model).__name__, tuple(layers),
                    source=f"lowbit.compress.to_workload of {type(model).__name__} on input "
                           f"{_shape_text(example_input)}", extra_params=extra)


def _shape_text(example_input) -> str:
    first = example_input if not isinstance(example_input, (tuple, list)) else example_input[0]
    return str(list(getattr(first, "shape", ())))
