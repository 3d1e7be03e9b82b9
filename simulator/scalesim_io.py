"""Read SCALE-Sim v3 files: ``.cfg`` configs into ``Profile``, topology CSVs into ``Workload``.

Behaviour follows SCALE-Sim v3.0.0 (``scale_config.read_conf_file`` and
``topology_utils.topologies.load_arrays_{conv,gemm}``; see ../shared/refs/scalesim-v3.md);
where SCALE-Sim crashes or silently misreads, lowbit raises an error or warns instead.

Config (``load_scalesim_config``)
    [architecture_presets] ArrayHeight / ArrayWidth -> rows / cols; Ifmap/Filter/OfmapSramSzkB
    x 1024 -> bytes (SCALE-Sim's word is 1 byte); Dataflow -> the default dataflow (the other
    two follow it in ``dataflows``: SCALE-Sim runs any of them on one array).
    [run_presets] InterfaceBandwidth CALC / USER -> ``bandwidth_mode`` "calc" / "user".
    USER: ``DramSpec.ports`` = {ifmap: [layout] IfmapSRAMBankBandwidth, filter:
    FilterSRAMBankBandwidth, ofmap: Bandwidth[0]} (words = bytes per cycle), latency 1 cycle,
    as SCALE-Sim's read/write buffers model it; ``bandwidth`` is their sum.
    CALC: ports None and ``bandwidth`` = CALC_BANDWIDTH, a stand-in for "unbounded": SCALE-Sim
    never stalls reads in this mode (the OFMAP buffer drains at ArrayWidth words per cycle,
    which the memory model takes from the array, not from the profile).
    SCALE-Sim has no clock and no energy: ``clock_hz`` defaults to DEFAULT_CLOCK_HZ and the
    energy table to Horowitz's (``profile_io.HOROWITZ_45NM``); both are arguments.
    Only keys lowbit uses are required (SCALE-Sim also insists on [general] run_name, the
    [layout] keys in CALC mode, [sparsity], offsets and request-buffer sizes).

Topology (``load_scalesim_topology``)
    The first line is a header and is skipped (as SCALE-Sim does). Every row is
    ``row.split(',')[:-1]``: **the field after the last comma is dropped** (SCALE-Sim's
    trailing-comma convention), so rows end with a comma; text after it (SCALE-Sim's shipped
    files put ``#dw`` there) is a comment. A row whose dropped field looks like data (a number
    or an N:M ratio) has no trailing comma: lowbit warns (``warnings.warn``) and, like
    SCALE-Sim, drops the field; if too few fields are left it raises ``WorkloadError`` where
    SCALE-Sim would crash.
    Conv form: ``Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels,
    Num Filter, Strides, [N:M],`` -> ``Conv2d(padding=0, ceil_mode=True)``: SCALE-Sim has no
    padding and sizes the ofmap as ceil((H - R + s) / s), which rounds up where the usual
    floor((H - R) / s) + 1 rounds down (its 224x224 7x7/2 stem gives 110x110, not 109x109);
    one stride for both axes; a filter larger than the ifmap is an error, as in SCALE-Sim.
    GEMM form: ``Layer, M, N, K, [N:M],`` -> ``Gemm(m, n, k)`` (SCALE-Sim runs it as the conv
    [H=M, W=K, R=1, S=K, C=1, F=N, stride 1], i.e. the same M x K by K x N GEMM).
    Depthwise: a conv row whose name contains ``DP`` is simulated by SCALE-Sim as ``Channels``
    separate layers with Channels = 1 and Num Filter unchanged, so Num Filter there is the
    number of filters *per input channel* (the depth multiplier). lowbit represents it as one
    grouped conv: in_ch = Channels, out_ch = Channels x Num Filter, groups = Channels, whose
    GEMMs are exactly SCALE-Sim's (M = ofmap pixels, N = Num Filter, K = R x S, Channels times).
    A plain depthwise layer is therefore ``..., Channels = C, Num Filter = 1`` with DP in the
    name. Rows without DP are dense convs exactly as written.
    Sparsity column: "N:M" with N == M is dense, "2:4" is 2:4, any other N:M becomes an
    unstructured density N/M (with a warning: lowbit's records know 2:4 structure only).
    Repeated layer names (SCALE-Sim allows them) get "#2", "#3", ... appended.
"""
from __future__ import annotations

import configparser
import os
import re
import warnings
from pathlib import Path

from .hardware import DATAFLOWS, DramSpec, EnergyTable, Profile, ProfileError
from .profile_io import HOROWITZ_45NM, HOROWITZ_SOURCES
from .workload import DENSE, Conv2d, Gemm, Layer, Sparsity, Workload, WorkloadError

__all__ = ["load_scalesim_config", "load_scalesim_topology", "DEFAULT_CLOCK_HZ",
           "CALC_BANDWIDTH", "SCALESIM_DRAM_LATENCY", "SCALESIM_WORD_BITS"]

DEFAULT_CLOCK_HZ = 1.0e9      # lowbit's assumption: SCALE-Sim reports cycles only
CALC_BANDWIDTH = 1048576.0    # bytes/cycle standing for "unbounded" in CALC mode (2^20)
SCALESIM_DRAM_LATENCY = 1     # cycles: SCALE-Sim's read buffers see DRAM rows 1 cycle after issue
SCALESIM_WORD_BITS = 8        # single_layer_sim.run: word_size = 1 byte

_ARCH = "architecture_presets"
_RUN = "run_presets"
_LAYOUT = "layout"

# Profile field -> the config key it comes from, to name both in an error.
_FIELD_KEYS = {
    "rows": f"[{_ARCH}] ArrayHeight", "cols": f"[{_ARCH}] ArrayWidth",
    # (positivity is checked before; what Profile can still reject is the size against the array)
    **{f"{op}_sram_bytes": f"[{_ARCH}] {op.capitalize()}SramSzkB against ArrayHeight / ArrayWidth"
       for op in ("ifmap", "filter", "ofmap")},
    "dataflows": f"[{_ARCH}] Dataflow",
    "dram.ports.ifmap": f"[{_LAYOUT}] IfmapSRAMBankBandwidth",
    "dram.ports.filter": f"[{_LAYOUT}] FilterSRAMBankBandwidth",
    "dram.ports.ofmap": f"[{_ARCH}] Bandwidth",
}


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
def load_scalesim_config(path: str | os.PathLike, *, clock_hz: float = DEFAULT_CLOCK_HZ,
                         energy: EnergyTable | None = None) -> Profile:
    """Read a SCALE-Sim v3 ``.cfg`` into a validated ``Profile`` (``path`` set).

    Raises ``ProfileError`` naming the file and the section/key for a missing section or
    key, a value that is not a positive integer, an unknown dataflow or bandwidth mode, or
    buffers too small for the array. Warns (``warnings.warn``) about settings lowbit does not
    model: custom SRAM layouts (bank conflicts), Ramulator traces, the config's sparsity mode.
    """
    path = Path(path)
    where = str(path)
    parser = configparser.ConfigParser()
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise ProfileError(f"{where}: cannot read: {exc}") from exc
    except configparser.Error as exc:
        raise ProfileError(f"{where}: not a valid .cfg file: {exc}") from exc

    def get(section: str, key: str) -> str:
        if not parser.has_section(section):
            raise ProfileError(f"{where}: [{section}]: missing section (needed for {key})")
        if not parser.has_option(section, key):
            raise ProfileError(f"{where}: [{section}] {key}: missing key")
        return parser.get(section, key).strip()

    def positive_int(section: str, key: str) -> int:
        text = get(section, key)
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise ProfileError(f"{where}: [{section}] {key}: must be a positive integer, "
                               f"got {text!r}")
        return value

    mode_text = get(_RUN, "InterfaceBandwidth")
    mode = mode_text.upper()
    if mode not in ("CALC", "USER"):
        raise ProfileError(f"{where}: [{_RUN}] InterfaceBandwidth: must be CALC or USER, "
                           f"got {mode_text!r}")
    rows = positive_int(_ARCH, "ArrayHeight")
    cols = positive_int(_ARCH, "ArrayWidth")
    sizes = {op: positive_int(_ARCH, f"{op.capitalize()}SramSzkB") * 1024
             for op in ("ifmap", "filter", "ofmap")}
    df_text = get(_ARCH, "Dataflow")
    df = df_text.lower()
    if df not in DATAFLOWS:
        raise ProfileError(f"{where}: [{_ARCH}] Dataflow: must be one of {', '.join(DATAFLOWS)}, "
                           f"got {df_text!r}")

    cfg = path.name
    sources = {
        "profile": f"SCALE-Sim v3 config {cfg}, read by lowbit.simulator.scalesim_io",
        "name": f"{cfg} [general] run_name (else the file name)",
        "rows": f"{cfg} [{_ARCH}] ArrayHeight",
        "cols": f"{cfg} [{_ARCH}] ArrayWidth",
        "dataflows": f"{cfg} [{_ARCH}] Dataflow = {df}, then the other SCALE-Sim dataflows",
        "clock_hz": "lowbit's default: SCALE-Sim configs carry no clock",
        "word_bits": "SCALE-Sim v3 single_layer_sim.run: word_size = 1 byte",
        "ifmap_sram_bytes": f"{cfg} [{_ARCH}] IfmapSramSzkB x 1024",
        "filter_sram_bytes": f"{cfg} [{_ARCH}] FilterSramSzkB x 1024",
        "ofmap_sram_bytes": f"{cfg} [{_ARCH}] OfmapSramSzkB x 1024",
        "macs_per_pe": "SCALE-Sim: one MAC per PE per cycle",
        "sparsity": "lowbit: no sparsity skipping (see [sparsity] SparsitySupport)",
        "bandwidth_mode": f"{cfg} [{_RUN}] InterfaceBandwidth = {mode}",
        "dram.latency": "SCALE-Sim v3 memory model: DRAM latency 1 cycle",
    }
    if mode == "USER":
        bw_text = get(_ARCH, "Bandwidth")
        try:
            bandwidths = [int(x.strip()) for x in bw_text.split(",")]
        except ValueError:
            bandwidths = []
        if not bandwidths or any(b <= 0 for b in bandwidths):
            raise ProfileError(f"{where}: [{_ARCH}] Bandwidth: must be a comma list of positive "
                               f"integers (words per cycle), got {bw_text!r}")
        ports = {"ifmap": positive_int(_LAYOUT, "IfmapSRAMBankBandwidth"),
                 "filter": positive_int(_LAYOUT, "FilterSRAMBankBandwidth"),
                 "ofmap": bandwidths[0]}
        for op, key in (("ifmap", "Ifmap"), ("filter", "Filter")):
            if parser.has_option(_LAYOUT, f"{key}SRAMBankNum"):
                banks = positive_int(_LAYOUT, f"{key}SRAMBankNum")
                if ports[op] % banks:
                    raise ProfileError(
                        f"{where}: [{_LAYOUT}] {key}SRAMBankNum: {banks} banks must divide "
                        f"{key}SRAMBankBandwidth = {ports[op]} (SCALE-Sim asserts it)")
        dram = DramSpec(bandwidth=float(sum(ports.values())), latency=SCALESIM_DRAM_LATENCY,
                        ports=ports)
        sources["dram.ports"] = (f"{cfg} USER mode: ifmap = [{_LAYOUT}] IfmapSRAMBankBandwidth, "
                                 f"filter = [{_LAYOUT}] FilterSRAMBankBandwidth, ofmap = "
                                 f"[{_ARCH}] Bandwidth[0] (words = bytes per cycle)")
        sources["dram.bandwidth"] = "lowbit: sum of the three USER-mode ports"
    else:
        dram = DramSpec(bandwidth=CALC_BANDWIDTH, latency=SCALESIM_DRAM_LATENCY)
        sources["dram.bandwidth"] = ("lowbit: CALC mode has no DRAM bandwidth (reads never stall), "
                                     "so 2^20 bytes/cycle stands for unbounded")

    sparsity = "none"
    if parser.has_section("sparsity") and parser.get("sparsity", "SparsitySupport",
                                                     fallback="false").strip().lower() == "true":
        sparsity = "2:4"
        sources["sparsity"] = (f"{cfg} [sparsity] SparsitySupport = true; lowbit's profiles "
                               "model 2:4 skipping only")
        warnings.warn(f"{where}: [sparsity] SparsitySupport = true: SCALE-Sim condenses any N:M "
                      "pattern of the topology; lowbit's profile supports 2:4 skipping only",
                      stacklevel=2)
    for key in ("IfmapCustomLayout", "FilterCustomLayout"):
        if parser.get(_LAYOUT, key, fallback="false").strip().lower() == "true":
            warnings.warn(f"{where}: [{_LAYOUT}] {key} = True: lowbit does not model SRAM bank "
                          "conflicts; the layout is ignored", stacklevel=2)
    if parser.get(_RUN, "UseRamulatorTrace", fallback="false").strip().lower() == "true":
        warnings.warn(f"{where}: [{_RUN}] UseRamulatorTrace = True: lowbit does not read "
                      "Ramulator latency traces; DRAM latency is the profile's", stacklevel=2)

    name = parser.get("general", "run_name", fallback="").strip() or path.stem
    energy = HOROWITZ_45NM if energy is None else energy
    if energy == HOROWITZ_45NM:
        sources.update(HOROWITZ_SOURCES)
    try:
        return Profile(
            name=name, rows=rows, cols=cols,
            dataflows=(df,) + tuple(d for d in DATAFLOWS if d != df),
            clock_hz=clock_hz, ifmap_sram_bytes=sizes["ifmap"], filter_sram_bytes=sizes["filter"],
            ofmap_sram_bytes=sizes["ofmap"], word_bits=SCALESIM_WORD_BITS, dram=dram,
            macs_per_pe={SCALESIM_WORD_BITS: 1}, energy=energy, sparsity=sparsity,
            bandwidth_mode=mode.lower(), sources=sources, path=where)
    except ProfileError as exc:
        field = str(exc)[len(where) + 2:].split(":", 1)[0]
        key = _FIELD_KEYS.get(field)
        if key is None:
            raise
        raise ProfileError(f"{exc} (config key {key})") from exc


# --------------------------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------------------------
_CONV_FIELDS = ("Layer name", "IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width",
                "Channels", "Num Filter", "Strides")
_GEMM_FIELDS = ("Layer", "M", "N", "K")
_LOOKS_LIKE_DATA = re.compile(r"^\s*\d+\s*(:\s*\d+\s*)?$")


def load_scalesim_topology(path: str | os.PathLike, *, form: str | None = None) -> Workload:
    """Read a SCALE-Sim v3 topology CSV (conv or GEMM form) into a ``Workload``.

    ``form`` is "conv" or "gemm"; None decides from the header (``Layer, M, N, K`` is GEMM).
    The workload is named after the file. Layers are 8-bit (SCALE-Sim's 1-byte word).
    Malformed rows raise ``WorkloadError`` naming the file, the line and the field.
    """
    path = Path(path)
    where = str(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"{where}: cannot read: {exc}") from exc
    if not lines:
        raise WorkloadError(f"{where}: empty file (SCALE-Sim expects a header line, then layers)")
    header = [f.strip() for f in lines[0].split(",")]
    if form is None:
        form = "gemm" if [h.lower() for h in header[1:4]] == ["m", "n", "k"] else "conv"
    if form not in ("conv", "gemm"):
        raise WorkloadError(f"{where}: form must be 'conv' or 'gemm', got {form!r}")
    if len(header) > 1 and _LOOKS_LIKE_DATA.match(header[1]):
        warnings.warn(f"{where}: line 1 looks like a layer, but SCALE-Sim always skips the first "
                      f"line as the header (so does lowbit)", stacklevel=2)
    names = _CONV_FIELDS if form == "conv" else _GEMM_FIELDS

    layers: list[Layer] = []
    used: set[str] = set()
    for lineno, raw in enumerate(lines[1:], start=2):
        row = raw.strip()
        if not row:
            continue
        parts = row.split(",")
        fields, dropped = parts[:-1], parts[-1].strip()
        at = f"{where}: line {lineno}"
        no_comma = bool(_LOOKS_LIKE_DATA.match(dropped))
        if no_comma and len(fields) >= len(names):
            warnings.warn(f"{at}: row does not end with a comma; as SCALE-Sim does, its last field "
                          f"({dropped!r}) is dropped (every row must end with ',')", stacklevel=2)
        if len(fields) < len(names):
            hint = (f"; the row does not end with a comma, so its last field ({dropped!r}) was "
                    "dropped as SCALE-Sim does: end every row with ','" if no_comma else "")
            raise WorkloadError(f"{at}: {names[len(fields)]}: missing; a {form} row needs "
                                f"{', '.join(names)}, [N:M] before its trailing comma{hint}")
        if len(fields) > len(names) + 1:
            raise WorkloadError(f"{at}: {len(fields)} fields before the trailing comma; a {form} "
                                f"row has {', '.join(names)} and an optional N:M sparsity")
        name = fields[0].strip()
        if not name:
            raise WorkloadError(f"{at}: {names[0]}: empty")
        values = [_int_field(at, names[i], fields[i]) for i in range(1, len(names))]
        sparsity = _sparsity(at, fields[len(names)]) if len(fields) > len(names) else DENSE
        unique = name
        copy = 1
        while unique in used:
            copy += 1
            unique = f"{name}#{copy}"
        used.add(unique)
        try:
            layers.append(_layer(form, unique, values, sparsity, depthwise="DP" in name))
        except WorkloadError as exc:
            raise WorkloadError(f"{at}: {exc}") from exc
    if not layers:
        raise WorkloadError(f"{where}: no layers after the header line")
    return Workload(path.stem, tuple(layers),
                    source=f"SCALE-Sim v3 {form} topology {path.name}")


def _int_field(at: str, name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise WorkloadError(f"{at}: {name}: must be an integer, got {text.strip()!r}") from None


def _sparsity(at: str, text: str) -> Sparsity:
    text = text.strip()
    if not text:
        return DENSE
    m = re.fullmatch(r"(\d+)\s*:\s*(\d+)", text)
    if not m:
        raise WorkloadError(f"{at}: N:M: sparsity must look like 2:4, got {text!r}")
    n, block = int(m.group(1)), int(m.group(2))
    if block == 0 or n == 0 or n > block:
        raise WorkloadError(f"{at}: N:M: need 0 < N <= M, got {text!r}")
    if n == block:
        return DENSE
    if (n, block) == (2, 4):
        return Sparsity("2:4", 0.5)
    warnings.warn(f"{at}: N:M sparsity {text} is not 2:4; lowbit records it as unstructured "
                  f"density {n}/{block}", stacklevel=3)
    return Sparsity("unstructured", n / block)


def _layer(form: str, name: str, v: list[int], sparsity: Sparsity, *, depthwise: bool) -> Layer:
    if form == "gemm":
        m, n, k = v
        return Gemm(name, m=m, n=n, k=k, sparsity=sparsity)
    h, w, r, s, c, f, stride = v
    if r > h or s > w:  # SCALE-Sim asserts the same (topologies.append_topo_arrays)
        raise WorkloadError(f"Filter Height/Width {r}x{s} larger than IFMAP {h}x{w}")
    if depthwise:  # SCALE-Sim: Channels one-channel layers of Num Filter filters each
        return Conv2d(name, in_h=h, in_w=w, in_ch=c, out_ch=c * f, kernel_h=r, kernel_w=s,
                      stride=stride, padding=0, groups=c, ceil_mode=True, sparsity=sparsity)
    return Conv2d(name, in_h=h, in_w=w, in_ch=c, out_ch=f, kernel_h=r, kernel_w=s,
                  stride=stride, padding=0, ceil_mode=True, sparsity=sparsity)


# SCALE-Sim v3's own topologies/conv_nets/Resnet18.csv (21 rows, unpadded as SCALE-Sim ships
# it; ../shared/refs/scalesim-v3.md): name, ifmap H, W, filter R, S, channels, filters, stride.
SCALESIM_RESNET18_ROWS = (
    [("conv1", 224, 224, 7, 7, 3, 64, 2)]
    + [(f"conv2_{i}", 56, 56, 3, 3, 64, 64, 1) for i in range(1, 5)]
    + [("conv3_1", 56, 56, 3, 3, 64, 128, 2), ("conv3_2", 28, 28, 3, 3, 128, 128, 1),
       ("conv3_ds", 56, 56, 1, 1, 64, 128, 2), ("conv3_3", 28, 28, 3, 3, 128, 128, 1),
       ("conv3_4", 28, 28, 3, 3, 128, 128, 1),
       ("conv4_1", 28, 28, 3, 3, 128, 256, 2), ("conv4_2", 14, 14, 3, 3, 256, 256, 1),
       ("conv4_ds", 28, 28, 1, 1, 128, 256, 2), ("conv4_3", 14, 14, 3, 3, 256, 256, 1),
       ("conv4_4", 14, 14, 3, 3, 256, 256, 1),
       ("conv5_1", 14, 14, 3, 3, 256, 512, 2), ("conv5_2", 7, 7, 3, 3, 512, 512, 1),
       ("conv5_ds", 14, 14, 1, 1, 256, 512, 2), ("conv5_3", 7, 7, 3, 3, 512, 512, 1),
       ("conv5_4", 7, 7, 3, 3, 512, 512, 1), ("fc", 1, 1, 1, 1, 512, 1000, 1)])


def scalesim_conv(row) -> Conv2d:
    """One SCALE-Sim conv-topology row ``(name, H, W, R, S, C, filters, stride)`` as lowbit reads it."""
    name, *values = row
    return _layer("conv", name, list(values), DENSE, depthwise=False)


def scalesim_resnet18() -> Workload:
    """SCALE-Sim's ResNet-18 topology, as its own Resnet18.csv lists it."""
    return Workload("Resnet18", tuple(scalesim_conv(r) for r in SCALESIM_RESNET18_ROWS))
