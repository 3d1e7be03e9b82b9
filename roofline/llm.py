"""LLM mode: Llama-2-7B prefill and decode with batch, context and KV-cache precision.

The layers are the zoo's (``lowbit.simulator.zoo``: q/k/v/o projections, the two attention
matmuls, gate/up/down, the LM head), rebuilt here for any batch size B and length:

* prefill of a prompt of P tokens: GEMMs with M = B * P, attention over P keys (full P x P,
  masked not skipped), the LM head for the last position of each sequence (M = B);
* decode of one token per sequence against a KV cache of C tokens: GEMMs with M = B,
  attention scores (B * heads) x [1 x C x head_dim] and context [1 x head_dim x C].

The KV cache is the second operand of the attention matmuls, stored at ``kv_bits``
(precision suffix -kv8 / -kv4); its size is 2 * layers * C * hidden * kv bits / 8 per
sequence. Reported: time to first token (the prefill latency), time per output token (the
decode latency), tokens/s = B / TPOT, the KV-cache bytes, and the memory-bound layers.
"""
from __future__ import annotations

from dataclasses import dataclass

from lowbit.simulator.workload import BatchedMatmul, Gemm, Layer, Workload

from .device import Device
from .precision import parse_precision

__all__ = ["LlmConfig", "LLAMA2_7B", "LLM_NAMES", "is_llm_name", "llm_workload", "analyze_llm",
           "llm_report", "kv_cache_bytes"]


@dataclass(frozen=True)
class LlmConfig:
    name: str
    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int
    source: str

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


LLAMA2_7B = LlmConfig("llama2-7b", layers=32, hidden=4096, heads=32, ffn=11008, vocab=32000,
                      source="Touvron et al., Llama 2, arXiv:2307.09288, 2023 (7B: 32 layers, "
                             "d=4096, 32 heads, FFN 11008 SwiGLU, vocab 32000)")
MODELS = {"llama2-7b": LLAMA2_7B}
PHASES = ("prefill", "decode")
LLM_NAMES = ("llama2-7b-prefill", "llama2-7b-decode", "llama2-7b")
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
    d, f, hd = cfg.hidden, cfg.ffn, cfg.head_dim
    out: list[Layer] = []
    for i in range(cfg.layers):
        p = f"layers.{i}"
        out += [
            Gemm(f"{p}.q_proj", m=m, n=d, k=d),
            Gemm(f"{p}.k_proj", m=m, n=d, k=d),
            Gemm(f"{p}.v_proj", m=m, n=d, k=d),
            BatchedMatmul(f"{p}.attn_scores", batch=batch * cfg.heads, m=tokens, n=keys, k=hd),
            BatchedMatmul(f"{p}.attn_context", batch=batch * cfg.heads, m=tokens, n=hd, k=keys),
            Gemm(f"{p}.o_proj", m=m, n=d, k=d),
            Gemm(f"{p}.gate_proj", m=m, n=f, k=d),
            Gemm(f"{p}.up_proj", m=m, n=f, k=d),
            Gemm(f"{p}.down_proj", m=m, n=d, k=f),
        ]
    out.append(Gemm("lm_head", m=batch, n=cfg.vocab, k=d))
    what = (f"prefill of {prompt_len} tokens" if phase == "prefill"
            else f"decode of one token over a {context}-token KV cache")
    return Workload(f"{cfg.name}-{phase}", tuple(out), source=f"{cfg.source}; {what}, batch {batch}")


def kv_cache_bytes(cfg: LlmConfig, batch: int, context: int, kv_bits: float) -> float:
    """Bytes of the K and V caches of ``batch`` sequences of ``context`` tokens."""
    return 2 * cfg.layers * context * cfg.hidden * kv_bits / 8 * batch


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
    info: dict[str, object] = {
        "model": cfg.name, "precision": prec.name, "batch": batch,
        "context": context, "prompt_len": prompt_len,
        "weight_bits": prec.weight_bits(), "kv_bits": prec.kv_bits_stored(),
        "kv_cache_bytes": kv_cache_bytes(cfg, batch, kv_len, prec.kv_bits_stored()),
    }
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
