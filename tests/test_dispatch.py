"""ISA dispatch: the registry's view, the C extension's own choice, and the environment
variables LOWBIT_DISABLE_ISA / LOWBIT_NUM_THREADS (checked in fresh interpreters)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import lowbit.kernels as lk
from lowbit.kernels import native

C_ISAS = ("portable", "avx2", "avx512", "avx512_vnni")
# Features each C variant needs (csrc/cpu.c isa_needs).
NEEDS = {
    "portable": set(),
    "avx2": {"avx2"},
    "avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl"},
    "avx512_vnni": {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"},
}
FEATURES = set(lk.cpu_features())


def test_native_extension_is_built():
    assert native.lib is not None, f"lowbit._native failed to import: {native.IMPORT_ERROR}"
    assert native.IMPORT_ERROR is None
    assert native.C_ISAS == C_ISAS
    assert native.lib.lb_isa_count() == len(C_ISAS)
    names = [native.ffi.string(native.lib.lb_isa_name(i)).decode() for i in range(len(C_ISAS))]
    assert names == list(C_ISAS)  # the Python mirror of the C enum is in the same order


def test_cpu_features_are_known_names():
    feats = lk.cpu_features()
    assert feats and len(feats) == len(set(feats))
    known = {"sse2", "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512dq",
             "avx512vl", "avx512_vnni", "avx512_vpopcntdq", "avx512_bf16", "avx512_bitalg",
             "avx512_vbmi", "bmi2", "popcnt"}
    assert set(feats) <= known
    assert "sse2" in feats  # x86-64 baseline


def test_dispatch_info_shape_and_order():
    info = lk.dispatch_info()
    assert "gemm_int8" in info
    g = info["gemm_int8"]
    avail = g["available"]
    assert avail, "no ISA available"
    assert g["selected"] == avail[0]
    assert set(avail) <= set(lk.ISA_RANK)
    assert avail == [isa for isa in lk.ISA_RANK if isa in avail]  # rank order
    assert avail[-1] == "ref"
    assert len(avail) == len(set(avail))
    # consistent with the registry, for both activation formats
    for act in ("s8", "u8"):
        usable = [k.key.isa for k in lk.REGISTRY.kernels("gemm_int8", act, "int8", usable=True)]
        assert usable == avail


def test_isa_rank():
    assert lk.ISA_RANK == ("avx512_vnni", "avx512", "avx2", "portable", "numba", "ref")


@pytest.mark.parametrize("isa", C_ISAS)
def test_c_variant_supported_agrees_with_cpu_features(isa):
    kernels = [k for k in lk.REGISTRY.kernels("gemm_int8") if k.key.isa == isa]
    assert len(kernels) == 2  # s8 and u8
    want = NEEDS[isa] <= FEATURES
    for k in kernels:
        assert k.supported() == want, (isa, sorted(FEATURES))
    assert native.c_isa_supported(isa) == want
    assert bool(native.lib.lb_isa_supported(C_ISAS.index(isa))) == want


def test_usable_c_variants_run_on_this_cpu():
    """Whatever the registry calls usable really is usable (no disabled ISA in this run)."""
    info = lk.dispatch_info()["gemm_int8"]["available"]
    for isa in C_ISAS:
        assert (isa in info) == (NEEDS[isa] <= FEATURES and isa not in native.DISABLED)
    assert ("numba" in info) == ("numba" not in native.DISABLED)
    assert "ref" in info


def test_c_isa_selected_is_best_usable_c_isa():
    avail = lk.dispatch_info()["gemm_int8"]["available"]
    # the C side never disables "portable": it is its floor
    best_c = next((isa for isa in lk.ISA_RANK if isa in C_ISAS and isa in avail), "portable")
    assert native.c_isa_selected() == best_c
    assert native.lib.lb_selected_isa() == C_ISAS.index(best_c)
    if not native.DISABLED:
        assert avail[0] == best_c


# --- fresh interpreters with environment settings -------------------------------------------

PROBE = textwrap.dedent("""
    import json
    import numpy as np
    import lowbit.kernels as lk
    from lowbit.kernels import native, ref

    def exact(isa=None):
        rng = np.random.default_rng(123)
        for m, k, n, dt, zp in ((7, 37, 70, np.int8, 0), (13, 130, 129, np.uint8, 131),
                                (256, 256, 256, np.int8, -3), (131, 301, 197, np.uint8, 0)):
            info = np.iinfo(dt)
            a = rng.integers(info.min, int(info.max) + 1, size=(m, k), dtype=dt)
            w = rng.integers(-128, 128, size=(k, n), dtype=np.int8)
            got = lk.gemm_int8(a, lk.pack_weights(w), a_zero_point=zp, isa=isa)
            if not np.array_equal(got, ref.gemm_int8(a, w, zp)):
                return False
        return True

    info = lk.dispatch_info()["gemm_int8"]
    print(json.dumps({"selected": info["selected"], "available": info["available"],
                      "c_selected": native.c_isa_selected(), "threads": lk.num_threads(),
                      "disabled": sorted(native.DISABLED), "exact": exact()}))
""")


def run_python(code: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOWBIT_DISABLE_ISA", "LOWBIT_NUM_THREADS")}
    env.update(env_vars)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=180)


def probe(**env_vars: str) -> dict:
    proc = run_python(PROBE, **env_vars)
    assert proc.returncode == 0, f"probe failed ({env_vars}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_subprocess_baseline_matches_this_process():
    res = probe(**{k: os.environ[k] for k in ("LOWBIT_DISABLE_ISA", "LOWBIT_NUM_THREADS")
                   if k in os.environ})
    assert res["selected"] == lk.dispatch_info()["gemm_int8"]["selected"]
    assert res["available"] == lk.dispatch_info()["gemm_int8"]["available"]
    assert res["exact"]


@pytest.mark.skipif("avx2" not in FEATURES, reason="CPU lacks AVX2")
def test_disable_avx512_selects_avx2():
    res = probe(LOWBIT_DISABLE_ISA="avx512_vnni,avx512")
    assert res["disabled"] == ["avx512", "avx512_vnni"]
    assert res["selected"] == "avx2"
    assert res["c_selected"] == "avx2"
    assert "avx512" not in res["available"] and "avx512_vnni" not in res["available"]
    assert res["available"] == ["avx2", "portable", "numba", "ref"]
    assert res["exact"]


def test_disable_all_simd_selects_portable():
    res = probe(LOWBIT_DISABLE_ISA="avx512_vnni,avx512,avx2")
    assert res["selected"] == "portable"
    assert res["c_selected"] == "portable"
    assert res["available"] == ["portable", "numba", "ref"]
    assert res["exact"]


def test_disable_portable_too_selects_numba():
    res = probe(LOWBIT_DISABLE_ISA="avx512_vnni,avx512,avx2,portable")
    assert res["selected"] == "numba"
    assert res["available"] == ["numba", "ref"]
    assert res["exact"]


def test_disable_numba_too_selects_ref():
    res = probe(LOWBIT_DISABLE_ISA="avx512_vnni,avx512,avx2,portable,numba")
    assert res["selected"] == "ref"
    assert res["available"] == ["ref"]
    assert res["exact"]


@pytest.mark.parametrize("value, bad", [("avx512vnni", "avx512vnni"),
                                        ("avx512_vnni,sse9", "sse9"), ("AVX3", "avx3")])
def test_unknown_disabled_isa_fails_import_listing_known(value, bad):
    proc = run_python("import lowbit.kernels", LOWBIT_DISABLE_ISA=value)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "LOWBIT_DISABLE_ISA" in last and bad in last.lower(), proc.stderr[-2000:]
    for name in lk.ISA_RANK:
        assert name in last, f"known ISA {name!r} not listed:\n{proc.stderr[-2000:]}"


def test_disabling_ref_fails_import():
    proc = run_python("import lowbit.kernels", LOWBIT_DISABLE_ISA="ref")
    assert proc.returncode != 0
    assert "LOWBIT_DISABLE_ISA" in proc.stderr and "ref" in proc.stderr


@pytest.mark.parametrize("n", [1, 3])
def test_num_threads_env(n):
    res = probe(LOWBIT_NUM_THREADS=str(n))
    assert res["threads"] == n
    assert res["exact"]


@pytest.mark.parametrize("value", ["0", "abc", "-2", "1.5"])
def test_num_threads_env_invalid(value):
    proc = run_python("import lowbit.kernels", LOWBIT_NUM_THREADS=value)
    assert proc.returncode != 0
    assert "LOWBIT_NUM_THREADS" in proc.stderr
    assert "positive integer" in proc.stderr
    assert repr(value) in proc.stderr or value in proc.stderr
