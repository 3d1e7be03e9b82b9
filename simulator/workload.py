"""Workloads: layers as frozen records, each reducible to the GEMMs an array executes.

The compute model consumes only ``GemmShape``s (``layer.gemms()``): a convolution becomes
its im2col GEMM (per group), an attention matmul one GEMM per batch element and head.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class WorkloadError(ValueError):
    """An invalid layer or workload; the message names the layer and the field."""


def _check(layer: str, name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise WorkloadError(f"layer {layer!r}: {name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class Sparsity:
    """Weight sparsity: "dense", "2:4" (semi-structured, density 0.5) or "unstructured"."""

    kind: str = "dense"
    density: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("dense", "2:4", "unstructured"):
            raise WorkloadError(f"sparsity.kind must be dense, 2:4 or unstructured, got {self.kind!r}")
        want = {"dense": 1.0, "2:4": 0.5}.get(self.kind)
        if want is not None and self.density != want:
            raise WorkloadError(f"sparsity.density of {self.kind} is {want}, got {self.density}")
        if not 0.0 < self.density <= 1.0:
            raise WorkloadError(f"sparsity.density must lie in (0, 1], got {self.density}")


DENSE = Sparsity()


@dataclass(frozen=True)
class GemmShape:
    """C[M, N] = A[M, K] @ B[K, N], repeated ``count`` times independently (groups, heads)."""

    m: int
    n: int
    k: int
    count: int = 1

    @property
    def macs(self) -> int:
        return self.m * self.n * self.k * self.count


@dataclass(frozen=True)
class Layer:
    """Base of every layer: a name, operand precisions in bits, and weight sparsity."""

    name: str
    a_bits: int = 8
    w_bits: int = 8
    sparsity: Sparsity = DENSE

    def _validate_common(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise WorkloadError(f"layer name must be a non-empty string, got {self.name!r}")
        _check(self.name, "a_bits", self.a_bits)
        _check(self.name, "w_bits", self.w_bits)

    def gemms(self) -> tuple[GemmShape, ...]:
        raise NotImplementedError

    @property
    def macs(self) -> int:
        """Dense multiply-accumulates (sparsity not applied)."""
        return sum(g.macs for g in self.gemms())

    @property
    def params(self) -> int:
        """Weights held by the layer (0 for activation-activation matmuls)."""
        return 0


@dataclass(frozen=True)
class Gemm(Layer):
    """A fully connected layer / GEMM: M rows of activations, N outputs, K reduction."""

    m: int = 1
    n: int = 1
    k: int = 1
    bias: bool = False

    def __post_init__(self) -> None:
        self._validate_common()
        for f in ("m", "n", "k"):
            _check(self.name, f, getattr(self, f))

    def gemms(self) -> tuple[GemmShape, ...]:
        return (GemmShape(self.m, self.n, self.k),)

    @property
    def params(self) -> int:
        return self.k * self.n + (self.n if self.bias else 0)


@dataclass(frozen=True)
class Conv2d(Layer):
    """A 2-D convolution on one image (batch 1): depthwise and grouped convs are real groups.

    ``ceil_mode`` rounds the output size up, out = ceil((in + 2 * padding - kernel) / stride)
    + 1, so a last window may hang over the bottom / right edge. SCALE-Sim sizes every conv
    this way (``topo_calc_hyperparams``: ceil((H - R + stride) / stride)); its topologies are
    read with ``ceil_mode=True``. The default is the usual floor.
    """

    in_h: int = 1
    in_w: int = 1
    in_ch: int = 1
    out_ch: int = 1
    kernel_h: int = 1
    kernel_w: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    bias: bool = False
    ceil_mode: bool = False

    def __post_init__(self) -> None:
        self._validate_common()
        for f in ("in_h", "in_w", "in_ch", "out_ch", "kernel_h", "kernel_w", "stride", "groups"):
            _check(self.name, f, getattr(self, f))
        _check(self.name, "padding", self.padding, minimum=0)
        if self.in_ch % self.groups or self.out_ch % self.groups:
            raise WorkloadError(f"layer {self.name!r}: groups={self.groups} must divide in_ch="
                                f"{self.in_ch} and out_ch={self.out_ch}")
        if (self.kernel_h > self.in_h + 2 * self.padding
                or self.kernel_w > self.in_w + 2 * self.padding):
            raise WorkloadError(f"layer {self.name!r}: kernel larger than the padded input")

    def _out(self, size: int, kernel: int) -> int:
        span = size + 2 * self.padding - kernel
        return (-(-span // self.stride) if self.ceil_mode else span // self.stride) + 1

    @property
    def out_h(self) -> int:
        return self._out(self.in_h, self.kernel_h)

    @property
    def out_w(self) -> int:
        return self._out(self.in_w, self.kernel_w)

    def gemms(self) -> tuple[GemmShape, ...]:
        k = self.kernel_h * self.kernel_w * (self.in_ch // self.groups)
        return (GemmShape(self.out_h * self.out_w, self.out_ch // self.groups, k, self.groups),)

    @property
    def params(self) -> int:
        w = self.kernel_h * self.kernel_w * (self.in_ch // self.groups) * self.out_ch
        return w + (self.out_ch if self.bias else 0)


@dataclass(frozen=True)
class BatchedMatmul(Layer):
    """Activation x activation matmuls (attention scores, attention x values): no weights."""

    batch: int = 1
    m: int = 1
    n: int = 1
    k: int = 1

    def __post_init__(self) -> None:
        self._validate_common()
        for f in ("batch", "m", "n", "k"):
            _check(self.name, f, getattr(self, f))

    def gemms(self) -> tuple[GemmShape, ...]:
        return (GemmShape(self.m, self.n, self.k, self.batch),)


@dataclass(frozen=True)
class Workload:
    """A named list of layers, with where its shapes come from.

    ``extra_params`` counts weights held by parts of the network that do no MACs and so are
    not layers here (embedding tables, normalization scales and shifts); ``total_params``
    adds them to the layers' weights, for comparison with published model sizes.
    """

    name: str
    layers: tuple[Layer, ...]
    source: str = ""
    extra_params: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise WorkloadError(f"workload {self.name!r} has no layers")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise WorkloadError(f"workload {self.name!r}: layer names must be unique, "
                                f"repeated: {', '.join(map(repr, dup))}")
        if (not isinstance(self.extra_params, int) or isinstance(self.extra_params, bool)
                or self.extra_params < 0):
            raise WorkloadError(f"workload {self.name!r}: extra_params must be an integer >= 0, "
                                f"got {self.extra_params!r}")

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        """Weights held by the layers (GEMM and convolution weights and their biases)."""
        return sum(layer.params for layer in self.layers)

    @property
    def total_params(self) -> int:
        """All weights of the network: the layers' plus ``extra_params``."""
        return self.params + self.extra_params


def as_workload(workload) -> Workload:
    """A Workload from a Workload, a Layer, a non-empty list of layers or a zoo name."""
    if isinstance(workload, Workload):
        return workload
    if isinstance(workload, Layer):
        return Workload(workload.name, (workload,))
    if isinstance(workload, str):
        from .zoo import get_workload  # the zoo builds on this module
        return get_workload(workload)
    if isinstance(workload, Sequence) and workload and all(isinstance(x, Layer) for x in workload):
        return Workload("layers", tuple(workload))
    raise TypeError(f"workload must be a Workload, a Layer, a list of layers or a zoo name, "
                    f"got {type(workload).__name__}")
