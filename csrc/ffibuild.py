"""cffi builder for the extension ``lowbit._native`` (API, out-of-line mode).

setup.py names this file in ``cffi_modules``; the C sources beside it compile at install
time. No ``-march``: ISA variants carry per-function target attributes and are chosen at
run time (csrc/cpu.c).
"""
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = sorted(str(p.relative_to(HERE.parent)) for p in HERE.glob("*.c"))
# Headers and included kernel bodies: an edit to one rebuilds the extension.
DEPENDS = sorted(str(p.relative_to(HERE.parent)) for ext in ("*.h", "*.inc") for p in HERE.glob(ext))

ffibuilder = FFI()
ffibuilder.cdef((HERE / "lowbit_api.h").read_text())
ffibuilder.set_source(
    "lowbit._native",
    '#include "lowbit.h"',
    sources=SOURCES,
    depends=DEPENDS,
    include_dirs=[str(HERE.relative_to(HERE.parent))],
    # -ffp-contract=off: float epilogues round identically in every ISA variant.
    extra_compile_args=["-O3", "-std=gnu11", "-pthread", "-ffp-contract=off", "-fno-plt"],
    extra_link_args=["-pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
