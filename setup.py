"""lowbit: low-bit kernels, compression, accelerator simulation and roofline analysis.

One installed package, ``lowbit``, assembled from the repository's top-level folders; the
C sources in csrc/ compile into the extension ``lowbit._native`` through cffi.
"""
from setuptools import setup

# Installed name -> source folder. app/ holds the package root (CLI, reports); it is not
# called lowbit/ so that a checkout on sys.path never shadows the installed package.
PACKAGE_DIRS = {
    "lowbit": "app",
    "lowbit.kernels": "kernels",
    "lowbit.compress": "compress",
    "lowbit.simulator": "simulator",
    "lowbit.roofline": "roofline",
    "lowbit.bench": "bench",
    "lowbit.sweep": "sweep",
    "lowbit.nas": "nas",
}

setup(
    name="lowbit",
    version="0.1.0",
    description="Low-bit neural network kernels, compression, accelerator simulation and rooflines",
    python_requires=">=3.11",
    packages=list(PACKAGE_DIRS),
    package_dir=PACKAGE_DIRS,
    package_data={"lowbit.simulator": ["profiles/*.toml"], "lowbit.roofline": ["profiles/*.toml"],
                  "lowbit.sweep": ["SCHEMA.md", "examples/*.toml", "examples/*.json",
                                   "examples/*.csv"]},
    setup_requires=["cffi>=1.16"],
    cffi_modules=["csrc/ffibuild.py:ffibuilder"],
    install_requires=[
        "numpy>=1.24",
        "numba>=0.59",
        "cffi>=1.16",
        "torch>=2.4,<2.14",  # 2.4: torch.library.register_fake (lowbit.kernels.torch_ops)
        "matplotlib>=3.7",
        "scikit-learn>=1.3",
        "rich>=13",
        "scipy>=1.10,<2",  # CSR weights from scipy.sparse (kernels.format_csr), spmm baseline
        "optuna>=4,<6",  # lowbit nas: grid / random / NSGA-II samplers (ask-and-tell)
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-benchmark>=4", "hypothesis>=6",
                 "dask>=2024.1", "distributed>=2024.1"],
        "dask": ["dask>=2024.1", "distributed>=2024.1"],   # lowbit sweep --executor dask://...
    },
    entry_points={"console_scripts": ["lowbit = lowbit.cli:main"]},
    zip_safe=False,
)
