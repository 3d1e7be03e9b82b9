"""Sparsity schedules: how the sparsity grows from 0 to the final target over pruning steps.

A schedule turns a final sparsity s_f into the targets of its n pruning steps, k = 1..n
(``targets(s_f)``); ``lowbit.compress.iterative_prune`` prunes to each target in turn and
fine-tunes in between. The targets only grow, and the last one is s_f.

* ``OneShot()``: one step straight to s_f.
* ``LinearSchedule(steps=n)``: s_k = s_f * k / n (NNI's Linear pruner).
* ``AGPSchedule(steps=n, initial=s_i)``: automated gradual pruning, Zhu & Gupta, "To prune,
  or not to prune: exploring the efficacy of pruning for model compression", ICLR-W 2018
  (arXiv:1710.01878), eq. (1): s_k = s_f + (s_i - s_f) (1 - k / n)^3; many weights go
  early, while the network is still redundant, and few late. ``agp_sparsity`` is the same
  curve at any step t of a training run (movement pruning updates its masks with it).

    >>> AGPSchedule(steps=3).targets(0.5)
    (0.35185185185185186, 0.48148148148148145, 0.5)
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OneShot", "LinearSchedule", "AGPSchedule", "agp_sparsity", "SCHEDULES"]


def _check_steps(steps) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps: must be an integer >= 1 (pruning steps), got {steps!r}")


def _check_final(final) -> float:
    if not isinstance(final, (int, float)) or isinstance(final, bool) or not 0.0 <= final < 1.0:
        raise ValueError(f"final: the target sparsity must lie in [0, 1), got {final!r}")
    return float(final)


def agp_sparsity(step: int, total: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's cubic curve at ``step`` of ``total``: s_f + (s_i - s_f)(1 - t/T)^3.

    ``step`` is clamped to [0, total]: s_i before the schedule starts, s_f after it ends.

    >>> agp_sparsity(5, 10, 0.8)
    0.7
    """
    _check_steps(total)
    final = _check_final(final)
    t = min(max(step, 0), total) / total
    return final + (initial - final) * (1.0 - t) ** 3


@dataclass(frozen=True)
class OneShot:
    """Prune once, straight to the target sparsity."""

    def targets(self, final: float) -> tuple[float, ...]:
        return (_check_final(final),)


@dataclass(frozen=True)
class LinearSchedule:
    """``steps`` equal increments: s_k = s_f * k / steps."""

    steps: int = 3

    def __post_init__(self) -> None:
        _check_steps(self.steps)

    def targets(self, final: float) -> tuple[float, ...]:
        final = _check_final(final)
        return tuple(final * k / self.steps for k in range(1, self.steps + 1))


@dataclass(frozen=True)
class AGPSchedule:
    """Zhu & Gupta's cubic schedule over ``steps`` pruning steps, starting from ``initial``.

    Targets s_k = s_f + (s_i - s_f)(1 - k / steps)^3 for k = 1..steps (k = 0 is the
    starting point s_i, not a pruning step). ``initial`` must not exceed the final target.
    """

    steps: int = 3
    initial: float = 0.0

    def __post_init__(self) -> None:
        _check_steps(self.steps)
        if (not isinstance(self.initial, (int, float)) or isinstance(self.initial, bool)
                or not 0.0 <= self.initial < 1.0):
            raise ValueError(f"initial: the starting sparsity must lie in [0, 1), got "
                             f"{self.initial!r}")

    def targets(self, final: float) -> tuple[float, ...]:
        final = _check_final(final)
        if self.initial > final:
            raise ValueError(f"initial: {self.initial} exceeds the final sparsity {final}; "
                             f"lower AGPSchedule(initial=...)")
        return tuple(agp_sparsity(k, self.steps, final, self.initial)
                     for k in range(1, self.steps + 1))


SCHEDULES = (OneShot, LinearSchedule, AGPSchedule)
