"""The kernel registry: (operation, activation format, weight format, ISA) -> implementation.

Reference (NumPy) entries are registered first; optimized entries for the same operation
and formats take precedence by ISA rank. Tests, benchmarks and the roofline enumerate this
table, so a new kernel is one new entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import native

# Preference order when an operation is called without an explicit ISA: best first.
ISA_RANK = ("avx512_vnni", "avx512", "avx2", "portable", "numba", "ref")


@dataclass(frozen=True)
class KernelKey:
    op: str      # public function name, e.g. "gemm_int8"
    act: str     # activation format, e.g. "s8", "u8", "f32"
    weight: str  # weight format name (lowbit.kernels.formats), e.g. "int8"
    isa: str     # one of ISA_RANK

    def __str__(self) -> str:
        return f"{self.op}[{self.act},{self.weight},{self.isa}]"


@dataclass(frozen=True)
class Kernel:
    key: KernelKey
    fn: Callable          # the implementation, called by the op's public wrapper
    cost: Callable        # cost(m, n, k) -> (ops, bytes): the roofline's and benches' W and Q
    supported: Callable[[], bool]  # this machine can run it

    @property
    def usable(self) -> bool:
        """Supported here and not disabled by LOWBIT_DISABLE_ISA."""
        return self.key.isa not in native.DISABLED and self.supported()


class Registry:
    def __init__(self) -> None:
        self._kernels: dict[KernelKey, Kernel] = {}
        self._selected: dict[tuple[str, str, str], Kernel] = {}  # chosen once per formats

    def register(self, kernel: Kernel) -> Kernel:
        if kernel.key.isa not in ISA_RANK:
            raise ValueError(f"kernel {kernel.key}: unknown ISA; known: {', '.join(ISA_RANK)}")
        self._kernels[kernel.key] = kernel
        self._selected.clear()
        return kernel

    def kernels(self, op: str | None = None, act: str | None = None, weight: str | None = None,
                *, usable: bool | None = None) -> list[Kernel]:
        """Registered kernels matching the given fields, best ISA first."""
        found = [k for key, k in self._kernels.items()
                 if (op is None or key.op == op) and (act is None or key.act == act)
                 and (weight is None or key.weight == weight)
                 and (usable is None or k.usable == usable)]
        return sorted(found, key=lambda k: (k.key.op, k.key.act, k.key.weight,
                                            ISA_RANK.index(k.key.isa)))

    def lookup(self, op: str, act: str, weight: str, isa: str | None = None) -> Kernel:
        """The kernel for ``isa``, or the best usable one when ``isa`` is None."""
        if isa is not None:
            kernel = self._kernels.get(KernelKey(op, act, weight, isa))
            if kernel is None:
                have = [k.key.isa for k in self.kernels(op, act, weight)]
                raise ValueError(f"isa: no {op} kernel for {act} x {weight} on {isa!r}; "
                                 f"registered: {', '.join(have) or 'none'}")
            if not kernel.supported():
                raise ValueError(f"isa: {isa!r} cannot run on this CPU "
                                 f"(features: {', '.join(native.cpu_features()) or 'unknown'})")
            return kernel
        selected = self._selected.get((op, act, weight))
        if selected is not None:
            return selected
        for kernel in self.kernels(op, act, weight, usable=True):
            self._selected[(op, act, weight)] = kernel
            return kernel
        raise ValueError(f"no usable {op} kernel for activations {act!r} and weights {weight!r}")

    def ops(self) -> list[str]:
        return sorted({key.op for key in self._kernels})

    def dispatch_info(self) -> dict[str, dict[str, object]]:
        """Per operation: the ISA used by default and the ISAs usable on this machine.

        An operation with several activation formats reports the ISAs usable for all of them.
        """
        info: dict[str, dict[str, object]] = {}
        for op in self.ops():
            formats = {(k.key.act, k.key.weight) for k in self.kernels(op)}
            usable = [isa for isa in ISA_RANK
                      if all(KernelKey(op, a, w, isa) in self._kernels
                             and self._kernels[KernelKey(op, a, w, isa)].usable
                             for a, w in formats)]
            info[op] = {"selected": usable[0] if usable else None, "available": usable}
        return info


REGISTRY = Registry()
