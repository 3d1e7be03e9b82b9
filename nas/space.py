"""Search spaces: MobileNet-style networks for the 8x8 digits images, encoded as index genomes.

A candidate (``Candidate``) is a network of the family ``lowbit.nas.network`` builds: a 3x3
stem convolution, three stages of fused inverted-residual blocks (stage 1 at 8x8, stages 2
and 3 entered with stride 2: 4x4 and 2x2), global average pooling and a Linear head. Per
stage the space chooses the depth (blocks), the kernel size and the expansion ratio (the
factorized hierarchical space of MnasNet, Tan et al., CVPR 2019); one width multiplier
scales every channel count. A space with bit widths (``digits-mbv2-bits``) also chooses the
weight and activation width of every quantizable layer (stem, each block's convolutions,
head): the joint architecture + quantization search of APQ (Wang et al., CVPR 2020). The
architecture-only space runs every layer at 8 bits, the NPU's native integer width.

Encoding: one axis per decision (``Axis``: a name and its ordered choices); a genome is one
choice index per axis. Every genome decodes to a valid candidate: bit-width genes of layers
the architecture does not have (blocks past a stage's depth, the 1x1 projection of an
expansion-1 block) are ignored, so several genomes map to one candidate. The candidate's
identity is the SHA-256 of its canonical JSON (``Candidate.key``), never the genome.

    >>> from lowbit.nas import get_space
    >>> space = get_space("digits-mbv2-bits")
    >>> cand = space.decode([0] * len(space.axes))
    >>> cand.describe()
    'w0.5 | s1 d1 k3 e1 | s2 d1 k3 e1 | s3 d1 k3 e1 | bits 4'
    >>> space.decode(space.encode(cand)) == cand
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from lowbit.sweep.points import canonical_json, digest

__all__ = ["Axis", "Stage", "Candidate", "SearchSpace", "SPACES", "get_space", "space_names",
           "layer_names", "CANDIDATE_FORMAT"]

CANDIDATE_FORMAT = 1  # bump when the meaning of a candidate's fields changes
DEFAULT_BITS = 8


@dataclass(frozen=True)
class Axis:
    """One decision: ``choices`` in a meaningful order (neighbours differ by one step)."""

    name: str
    choices: tuple

    def __post_init__(self) -> None:
        if not self.choices or len(set(self.choices)) != len(self.choices):
            raise ValueError(f"axis {self.name}: choices must be distinct and non-empty, "
                             f"got {self.choices!r}")


@dataclass(frozen=True)
class Stage:
    """One stage: ``depth`` blocks with a ``kernel`` x ``kernel`` convolution expanding the
    channels ``expand`` times."""

    depth: int
    kernel: int
    expand: int


@dataclass(frozen=True)
class Candidate:
    """One network: width multiplier, stages, and the bit width of every quantizable layer
    (``bits``: (layer name, bits) in execution order, see ``layer_names``)."""

    width: float
    stages: tuple[Stage, ...]
    bits: tuple[tuple[str, int], ...]

    def to_dict(self) -> dict:
        return {"v": CANDIDATE_FORMAT, "width": float(self.width),
                "stages": [{"depth": s.depth, "kernel": s.kernel, "expand": s.expand}
                           for s in self.stages],
                "bits": {name: b for name, b in self.bits}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Candidate":
        """Inverse of ``to_dict`` (validate with ``SearchSpace.validate``)."""
        if data.get("v") != CANDIDATE_FORMAT:
            raise ValueError(f"candidate: format {data.get('v')!r}, this lowbit reads "
                             f"{CANDIDATE_FORMAT}")
        stages = tuple(Stage(int(s["depth"]), int(s["kernel"]), int(s["expand"]))
                       for s in data["stages"])
        bits = {str(k): int(v) for k, v in data["bits"].items()}
        names = layer_names(stages)   # JSON key order is not layer order
        if set(bits) != set(names):
            raise ValueError(f"candidate: bits must name the layers {names}, got {sorted(bits)}")
        return cls(float(data["width"]), stages, tuple((n, bits[n]) for n in names))

    def key(self) -> str:
        """SHA-256 of the canonical JSON of ``to_dict()``."""
        return digest(self.to_dict())

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @property
    def bits_map(self) -> dict[str, int]:
        return dict(self.bits)

    def describe(self) -> str:
        """A one-line summary: width, per stage depth / kernel / expansion, the bit widths."""
        stages = " | ".join(f"s{i + 1} d{s.depth} k{s.kernel} e{s.expand}"
                            for i, s in enumerate(self.stages))
        widths = sorted({b for _, b in self.bits})
        if len(widths) == 1:
            bits = f"bits {widths[0]}"
        else:
            bits = "bits " + " ".join(str(b) for _, b in self.bits)
        return f"w{self.width:g} | {stages} | {bits}"


def layer_names(stages: Sequence[Stage]) -> list[str]:
    """Quantizable layers of an architecture, in execution order (the module names of
    ``lowbit.nas.network.NASNet``): ``stem``, per block ``stages.S.B.spatial`` and, when it
    expands, ``stages.S.B.project``, then ``head``."""
    names = ["stem"]
    for s, stage in enumerate(stages):
        for b in range(stage.depth):
            names.append(f"stages.{s}.{b}.spatial")
            if stage.expand > 1:
                names.append(f"stages.{s}.{b}.project")
    return names + ["head"]


@dataclass(frozen=True)
class SearchSpace:
    """A family of candidates and its genome encoding (see the module doc).

    Args:
        name: the space's name.
        widths, depths, kernels, expands: the choices (ordered) of the width multiplier and,
            per stage, of the depth, kernel size and expansion ratio.
        bit_choices: per-layer bit widths to search (weights and activations), or None for
            the architecture only (every layer at 8 bits).
        base_channels: output channels of the three stages at width 1.0 (the stem has the
            first stage's); scaled channels are rounded to a multiple of 4, at least 4.
        strides: stride of each stage's first block.
    """

    name: str
    widths: tuple[float, ...] = (0.5, 0.75, 1.0)
    depths: tuple[int, ...] = (1, 2, 3)
    kernels: tuple[int, ...] = (3, 5)
    expands: tuple[int, ...] = (1, 2, 4)
    bit_choices: tuple[int, ...] | None = None
    base_channels: tuple[int, ...] = (8, 16, 24)
    strides: tuple[int, ...] = (1, 2, 2)

    def __post_init__(self) -> None:
        if len(self.base_channels) != len(self.strides):
            raise ValueError("base_channels, strides: one entry per stage")
        for field, values in (("widths", self.widths), ("depths", self.depths),
                              ("kernels", self.kernels), ("expands", self.expands),
                              ("base_channels", self.base_channels), ("strides", self.strides)):
            if not values or any(v <= 0 for v in values):
                raise ValueError(f"{field}: must be positive numbers, got {values!r}")
        if any(k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernels: must be odd (same padding), got {self.kernels!r}")
        if self.bit_choices is not None and (
                not self.bit_choices or any(not 2 <= b <= 8 for b in self.bit_choices)):
            raise ValueError(f"bit_choices: widths in 2..8, or None, got {self.bit_choices!r}")

    # -- axes --------------------------------------------------------------------------------
    @property
    def stages(self) -> int:
        return len(self.base_channels)

    @property
    def bit_slots(self) -> tuple[str, ...]:
        """Every layer name any architecture of the space can have (one bits gene each)."""
        deepest = [Stage(max(self.depths), self.kernels[0], max(self.expands))] * self.stages
        return tuple(layer_names(deepest))

    @property
    def axes(self) -> tuple[Axis, ...]:
        axes = [Axis("width", self.widths)]
        for s in range(self.stages):
            axes += [Axis(f"s{s + 1}.depth", self.depths), Axis(f"s{s + 1}.kernel", self.kernels),
                     Axis(f"s{s + 1}.expand", self.expands)]
        if self.bit_choices is not None:
            axes += [Axis(f"bits.{name}", self.bit_choices) for name in self.bit_slots]
        return tuple(axes)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(len(a.choices) for a in self.axes)

    def size(self) -> int:
        """Distinct candidates (not genomes): architectures x bit assignments of their layers."""
        per_stage = 0  # (stage architecture, bits of its layers) pairs; a block has 1 or 2 layers
        for d in self.depths:
            for e in self.expands:
                per_stage += len(self.kernels) * (len(self.bit_choices) ** (d * (1 + (e > 1)))
                                                  if self.bit_choices else 1)
        outer = len(self.bit_choices) ** 2 if self.bit_choices else 1  # stem, head
        return len(self.widths) * outer * per_stage ** self.stages

    # -- genome <-> candidate ------------------------------------------------------------------
    def _check_genome(self, genome: Sequence[int]) -> tuple[int, ...]:
        genome = tuple(int(g) for g in genome)
        cards = self.cardinalities
        if len(genome) != len(cards):
            raise ValueError(f"genome: {self.name} has {len(cards)} genes, got {len(genome)}")
        bad = [(a.name, g) for a, g, n in zip(self.axes, genome, cards) if not 0 <= g < n]
        if bad:
            raise ValueError(f"genome: index out of range for {bad[0][0]}: {bad[0][1]}")
        return genome

    def decode(self, genome: Sequence[int]) -> Candidate:
        """The candidate of a genome (one choice index per axis, in ``axes`` order)."""
        genome = self._check_genome(genome)
        width = self.widths[genome[0]]
        stages = tuple(Stage(self.depths[genome[1 + 3 * s]], self.kernels[genome[2 + 3 * s]],
                             self.expands[genome[3 + 3 * s]]) for s in range(self.stages))
        names = layer_names(stages)
        if self.bit_choices is None:
            bits = tuple((n, DEFAULT_BITS) for n in names)
        else:
            slot = dict(zip(self.bit_slots, genome[1 + 3 * self.stages:]))
            bits = tuple((n, self.bit_choices[slot[n]]) for n in names)
        return Candidate(width, stages, bits)

    def encode(self, candidate: Candidate) -> tuple[int, ...]:
        """A genome of ``candidate``; ignored bit genes get the first choice."""
        self.validate(candidate)
        genome = [self.widths.index(candidate.width)]
        for st in candidate.stages:
            genome += [self.depths.index(st.depth), self.kernels.index(st.kernel),
                       self.expands.index(st.expand)]
        if self.bit_choices is not None:
            have = candidate.bits_map
            genome += [self.bit_choices.index(have[n]) if n in have else 0
                       for n in self.bit_slots]
        return tuple(genome)

    def canonical(self, genome: Sequence[int]) -> tuple[int, ...]:
        """The genome of ``decode(genome)`` with its ignored genes reset (one per candidate)."""
        return self.encode(self.decode(genome))

    def validate(self, candidate: Candidate, *, bits: bool = True) -> Candidate:
        """Raise ValueError unless ``candidate`` belongs to this space; returns it.
        ``bits=False`` checks the architecture and the layer names only, not the widths."""
        if not isinstance(candidate, Candidate):
            raise TypeError(f"candidate: must be a Candidate, got {type(candidate).__name__}")
        if candidate.width not in self.widths:
            raise ValueError(f"candidate: width {candidate.width} not in {self.widths}")
        if len(candidate.stages) != self.stages:
            raise ValueError(f"candidate: {len(candidate.stages)} stages, {self.name} has "
                             f"{self.stages}")
        for i, st in enumerate(candidate.stages):
            for field, allowed in (("depth", self.depths), ("kernel", self.kernels),
                                   ("expand", self.expands)):
                if getattr(st, field) not in allowed:
                    raise ValueError(f"candidate: stage {i + 1} {field} {getattr(st, field)} "
                                     f"not in {allowed}")
        names = layer_names(candidate.stages)
        if [n for n, _ in candidate.bits] != names:
            raise ValueError(f"candidate: bits must name the layers {names} in order, got "
                             f"{[n for n, _ in candidate.bits]}")
        allowed = (DEFAULT_BITS,) if self.bit_choices is None else self.bit_choices
        bad = [] if not bits else [(n, b) for n, b in candidate.bits if b not in allowed]
        if bad:
            raise ValueError(f"candidate: layer {bad[0][0]} at {bad[0][1]} bits; {self.name} "
                             f"allows {allowed}")
        return candidate

    def neighbours(self, genome: Sequence[int]) -> list[tuple[int, ...]]:
        """Genomes one step away: one gene moved to the next or previous choice."""
        genome = self._check_genome(genome)
        out = []
        for i, n in enumerate(self.cardinalities):
            for step in (-1, 1):
                g = genome[i] + step
                if 0 <= g < n:
                    out.append(genome[:i] + (g,) + genome[i + 1:])
        return out

    def channels(self, width: float) -> tuple[int, ...]:
        """Output channels of each stage at ``width`` (multiples of 4, at least 4)."""
        return tuple(max(4, 4 * math.floor(c * width / 4 + 0.5)) for c in self.base_channels)

    def to_dict(self) -> dict:
        return {"name": self.name, "widths": list(self.widths), "depths": list(self.depths),
                "kernels": list(self.kernels), "expands": list(self.expands),
                "bit_choices": None if self.bit_choices is None else list(self.bit_choices),
                "base_channels": list(self.base_channels), "strides": list(self.strides)}


SPACES = {s.name: s for s in (
    SearchSpace("digits-mbv2"),
    # 4 and 8 bits: the integer widths edge-npu-32x32 runs natively (2 and 1 MACs per PE)
    SearchSpace("digits-mbv2-bits", bit_choices=(4, 8)),
)}


def space_names() -> tuple[str, ...]:
    return tuple(SPACES)


def get_space(space: str | SearchSpace) -> SearchSpace:
    """A built-in space by name (``space_names()``), or ``space`` itself."""
    if isinstance(space, SearchSpace):
        return space
    if space not in SPACES:
        raise ValueError(f"space: unknown {space!r}; built-in spaces: {', '.join(SPACES)}")
    return SPACES[space]
