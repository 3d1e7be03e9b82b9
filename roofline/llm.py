"""LLM mode: Llama-2-7B / 70B prefill and decode with batch, context and KV-cache precision.

The layers are the zoo's (``lowbit.simulator.zoo``: q/k/v/o projections, the two attention
matmuls, gate/up/down, the LM head), rebuilt here for any batch size B and length:

* prefill of a prompt of P tokens: GEMMs with M = B * P, attention over P keys (full P x P,
  masked not skipped), the LM head for the last position of each sequence (M = B);
* decode of one token per sequence against a KV cache of C tokens: GEMMs with M = B,
  attention scores (B * kv_heads) x [g x C x head_dim] and context [g x head_dim x C], with
  g = heads / kv_heads query heads sharing one KV head (grouped-query attention, Llama-2-70B:
  g = 8; g = 1 is multi-head attention): the g heads of a group are stacked as rows, so
  their K and V are read once, as a GQA kernel does.

The KV cache is the second operand of the attention matmuls, stored at ``kv_bits``
(precision suffix -kv8 / -kv4); its size is 2 * layers * C * kv_heads * head_dim * kv bits / 8
per sequence. Reported: time to first token (the prefill latency), time per output token (the
decode latency), tokens/s = B / TPOT, the KV-cache bytes, the memory-bound layers, and
whether the weights and the KV cache fit the device's outermost memory (``memory_fit``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from lowbit.simulator.workload import BatchedMatmul, Gemm, Layer, Workload

from .device import Device
from .precision import parse_precision

__all__ = ["LlmConfig", "LLAMA2_7B", "LLAMA2_70B", "LLM_NAMES", "is_llm_name", "llm_workload",
           "analyze_llm", "llm_report", "kv_cache_bytes", "weight_bytes", "memory_fit",
           "MemoryFitWarning"]

EMBED_BITS = 16   # the token embedding and the norm weights stay 16-bit under weight quantization


class MemoryFitWarning(UserWarning):
    """The weights and KV cache of an LLM analysis exceed the device's memory."""


@dataclass(frozen=True)
class LlmConfig:
    """A decoder-only transformer of the Llama-2 shape (SwiGLU FFN, untied embeddings, two
    RMSNorms per layer and one final). ``kv_heads`` < ``heads``: grouped-query attention."""

    name: str
    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int
    source: str
    kv_heads: int | None = None   # None: one KV head per query head

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def kv_dim(self) -> int:
        """Width of the K (and V) projection: kv_heads * head_dim."""
        return self.n_kv_heads * self.head_dim

    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.heads // self.n_kv_heads

    def gemm_params(self) -> int:
        """Weights the GEMMs multiply: per layer q, k, v, o, gate, up, down; the LM head."""
        d, f, kv = self.hidden, self.ffn, self.kv_dim
        return self.layers * (2 * d * d + 2 * d * kv + 3 * d * f) + self.vocab * d

    def other_params(self) -> int:
        """The token embedding (looked up, not multiplied) and the RMSNorm weights."""
        return self.vocab * self.hidden + (2 * self.layers + 1) * self.hidden


LLAMA2_7B = LlmConfig("llama2-7b", layers=32, hidden=4096, heads=32, ffn=11008, vocab=32000,
                      source="Touvron et al., Llama 2, arXiv:2307.09288, 2023 (7B: 32 layers, "
                             "d=4096, 32 heads, FFN 11008 SwiGLU, vocab 32000)")
LLAMA2_70B = LlmConfig("llama2-70b", layers=80, hidden=8192, heads=64, kv_heads=8, ffn=28672,
                       vocab=32000,
                       source="Touvron et al., Llama 2, arXiv:2307.09288, 2023 (70B: grouped-"
                              "query attention, Table 1); shapes from Meta's released "
                              "configuration: 80 layers, d=8192, 64 query heads, 8 KV heads, "
                              "FFN 28672 SwiGLU, vocab 32000")
MODELS = {"llama2-7b": LLAMA2_7B, "llama2-70b": LLAMA2_70B}
PHASES = ("prefill", "decode")
LLM_NAMES = tuple(f"{model}-{phase}" for model in MODELS for phase in PHASES) + tuple(MODELS)
DEFAULT_CONTEXT = 2048     # the zoo's decode KV length
DEFAULT_PROMPT = 512       # the zoo's prefill length


def is_llm_name(name: str) -> bool:
    return name in LLM_NAMES


def _split(name: str) -> tuple[LlmConfig, str | None]:
    for model, cfg in MODELS.items():
        if name == model:
            return cfg, None
        for phase in PHASES:
            if name == f"{model}-{phase}":
                return cfg, phase
    raise ValueError(f"unknown LLM workload {name!r}; known: {', '.join(LLM_NAMES)}")


def _check_positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")


def llm_workload(cfg: LlmConfig, phase: str, *, batch: int = 1,
                 context: int = DEFAULT_CONTEXT, prompt_len: int = DEFAULT_PROMPT) -> Workload:
    """The layers of one prefill (``prompt_len`` tokens) or one decode step (KV ``context``)."""
    if phase not in PHASES:
        raise ValueError(f"phase: must be one of {', '.join(PHASES)}, got {phase!r}")
    for name, value in (("batch", batch), ("context", context), ("prompt_len", prompt_len)):
        _check_positive(name, value)
    tokens, keys = (prompt_len, prompt_len) if phase == "prefill" else (1, context)
    m = batch * tokens
    d, f, hd, kv, g = cfg.hidden, cfg.ffn, cfg.head_dim, cfg.kv_dim, cfg.group
    heads = batch * cfg.n_kv_heads  # one matmul per KV head, its g query heads as rows
    out: list[Layer] = []
    for i in range(cfg.layers):
        p = f"layers.{i}"
        out += [
            Gemm(f"{p}.q_proj", m=m, n=d, k=d),
            Gemm(f"{p}.k_proj", m=m, n=kv, k=d),
            Gemm(f"{p}.v_proj", m=m, n=kv, k=d),
            BatchedMatmul(f"{p}.attn_scores", batch=heads, m=g * tokens, n=keys, k=hd),
            BatchedMatmul(f"{p}.attn_context", batch=heads, m=g * tokens, n=hd, k=keys),
            Gemm(f"{p}.o_proj", m=m, n=d, k=d),
            Gemm(f"{p}.gate_proj", m=m, n=f, k=d),
            Gemm(f"{p}.up_proj", m=m, n=f, k=d),
            Gemm(f"{p}.down_proj", m=m, n=d, k=f),
        ]
    out.append(Gemm("lm_head", m=batch, n=cfg.vocab, k=d))
    what = (f"prefill of {prompt_len} tokens" if phase == "prefill"
            else f"decode of one token over a {context}-token KV cache")
    return Workload(f"{cfg.name}-{phase}", tuple(out),
                    source=f"{cfg.source}; {what}, batch {batch}")


def kv_cache_bytes(cfg: LlmConfig, batch: int, context: int, kv_bits: float) -> float:
    """Bytes of the K and V caches of ``batch`` sequences of ``context`` tokens:
    2 * layers * context * kv_heads * head_dim * kv_bits / 8 * batch."""
    return 2 * cfg.layers * context * cfg.kv_dim * kv_bits / 8 * batch


def weight_bytes(cfg: LlmConfig, weight_bits: float) -> float:
    """Bytes of the model's weights: the GEMM weights at ``weight_bits`` (scales included,
    ``Precision.weight_bits()``), the embedding and norm weights at 16 bits."""
    return cfg.gemm_params() * weight_bits / 8 + cfg.other_params() * EMBED_BITS / 8


def memory_fit(device: Device, weights: float, kv_cache: float) -> dict[str, object]:
    """Whether ``weights`` + ``kv_cache`` bytes fit the device's outermost memory.

    Activations and runtime workspace are not counted, so fitting is necessary, not
    sufficient. ``fits`` is None when the profile gives no capacity (simulator NPUs).
    """
    level = device.memory[0]
    need = weights + kv_cache
    cap = level.capacity_bytes
    out: dict[str, object] = {"weight_bytes": weights, "memory_required_bytes": need,
                              "memory_level": level.name, "memory_capacity_bytes": cap}
    what = (f"weights {weights / 1e9:.2f} GB + KV cache {kv_cache / 1e9:.2f} GB = "
            f"{need / 1e9:.2f} GB")
    if cap is None:
        out["fits"] = None
        out["memory_note"] = f"{what}; {device.name} gives no {level.name} capacity: fit unknown"
    else:
        out["fits"] = need <= cap
        verdict = "fits" if need <= cap else "DOES NOT FIT"
        out["memory_note"] = (f"{what} of {cap / 1e9:.2f} GB {level.name} on {device.name}: "
                              f"{verdict} (activations and workspace not counted)")
    return out


def _layer_kind(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def analyze_llm(name: str, device: Device, precision=None, *, batch: int = 1,
                context: int = DEFAULT_CONTEXT, prompt_len: int = DEFAULT_PROMPT,
                sparse: bool = False, efficiency: float | None = None,
                dataflow: str | None = None):
    """``analyze`` for an LLM name: one phase, or both for the bare model name.

    For the bare model ("llama2-7b") the records are the decode step's and ``llm`` carries
    both phases' figures.
    """
    from .model import RooflineResult, analyze_layers

    cfg, phase = _split(name)
    prec = parse_precision(precision if precision is not None else "w16a16")
    phases = (phase,) if phase else PHASES
    runs = {}
    for ph in phases:
        wl = llm_workload(cfg, ph, batch=batch, context=context, prompt_len=prompt_len)
        runs[ph] = (wl, *analyze_layers(wl, device, prec, llm=True, sparse=sparse,
                                        efficiency=efficiency, dataflow=dataflow))
    kv_len = prompt_len if phase == "prefill" else context
    kv_bytes = kv_cache_bytes(cfg, batch, kv_len, prec.kv_bits_stored())
    info: dict[str, object] = {
        "model": cfg.name, "precision": prec.name, "batch": batch,
        "context": context, "prompt_len": prompt_len,
        "weight_bits": prec.weight_bits(), "kv_bits": prec.kv_bits_stored(),
        "kv_cache_bytes": kv_bytes,
        **memory_fit(device, weight_bytes(cfg, prec.weight_bits()), kv_bytes),
    }
    if info["fits"] is False:
        warnings.warn(str(info["memory_note"]), MemoryFitWarning, stacklevel=3)
    if "prefill" in runs:
        _, _, tot = runs["prefill"]
        info["ttft_s"] = tot.latency_s
        info["prefill_tokens_per_s"] = batch * prompt_len / tot.latency_s
        info["prefill_memory_bound"] = sorted({_layer_kind(n) for n in tot.memory_bound_layers})
    if "decode" in runs:
        _, _, tot = runs["decode"]
        info["tpot_s"] = tot.latency_s
        info["tokens_per_s"] = batch / tot.latency_s
        info["decode_memory_bound"] = sorted({_layer_kind(n) for n in tot.memory_bound_layers})
    shown = "decode" if "decode" in runs else "prefill"
    wl, layers, total = runs[shown]
    return RooflineResult(wl.name if phase else f"{cfg.name} (decode shown)", device,
                          prec.name, layers, total, info)


def llm_report(model: str, profile, precision="w16a16", *, batch: int = 1,
               prompt_len: int = DEFAULT_PROMPT, context: int = DEFAULT_CONTEXT, **kw) -> dict:
    """TTFT, TPOT, tokens/s and the memory-bound layers of ``model`` (both phases)."""
    from .model import analyze
    return dict(analyze(model, profile, precision, batch=batch, prompt_len=prompt_len,
                        context=context, **kw).llm)
