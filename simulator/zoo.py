"""Built-in workloads: the networks of issue 4 as ``Workload`` records.

Every network is batch 1 with 8-bit activations and weights (``Layer``'s defaults). What is a
layer here and what is not:

* Layers are the operations that do multiply-accumulates: convolutions (padding, stride and
  groups as in the real network; depthwise = groups equal to channels), fully connected
  layers (``Gemm``), and the two activation-by-activation matmuls of attention
  (``BatchedMatmul``, batch = heads).
* Not layers, because they do no MACs: batch / layer / RMS normalization, softmax,
  activations, residual adds, pooling, the SwiGLU gate product, rotary embeddings, and
  embedding lookups. Their weights (normalization scales and shifts, embedding tables) are
  counted in ``Workload.extra_params`` so that ``total_params`` is the published model size.
* CNN classifiers end with their fully connected layer (m = 1). BERT-style encoders end with
  the pooler (m = 1, the [CLS] token); Llama ends with the LM head for the one position whose
  next token is wanted (m = 1, also in prefill, as generation needs).

Architectures follow the reference implementations that the published parameter counts were
measured on: torchvision for the CNNs (ResNet v1.5: stride on the 3x3 convolution of a
bottleneck), Hugging Face BertModel for BERT and MiniLM, and Meta's Llama 2 for Llama-2-7B.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

from .workload import BatchedMatmul, Conv2d, Gemm, Layer, Workload, WorkloadError

__all__ = ["get_workload", "workload_names", "resnet18", "resnet50", "mobilenetv2", "vgg16",
           "bert_base", "minilm_l6", "llama2_7b_prefill", "llama2_7b_decode"]

IMAGENET_HW = 224
IMAGENET_CLASSES = 1000


class _Net:
    """Accumulates layers while tracking a CNN's feature-map size."""

    def __init__(self) -> None:
        self.layers: list[Layer] = []
        self.extra = 0  # weights outside MAC layers (norms, embeddings)

    def conv(self, name, hw, cin, cout, k, stride=1, padding=0, groups=1, bias=False, bn=True):
        layer = Conv2d(name, in_h=hw, in_w=hw, in_ch=cin, out_ch=cout, kernel_h=k, kernel_w=k,
                       stride=stride, padding=padding, groups=groups, bias=bias)
        self.layers.append(layer)
        if bn:
            self.extra += 2 * cout  # BatchNorm scale and shift (running stats are buffers)
        return layer.out_h

    def fc(self, name, m, k, n, bias=True):
        self.layers.append(Gemm(name, m=m, n=n, k=k, bias=bias))

    def workload(self, name: str, source: str) -> Workload:
        return Workload(name, tuple(self.layers), source=source, extra_params=self.extra)


def _pool_out(hw: int, k: int, stride: int, padding: int) -> int:
    return (hw + 2 * padding - k) // stride + 1


# --------------------------------------------------------------------------------------------
# CNNs (ImageNet, 224 x 224, batch 1)
# --------------------------------------------------------------------------------------------
def _resnet(name: str, blocks: tuple[int, ...], bottleneck: bool, source: str) -> Workload:
    net = _Net()
    hw = net.conv("conv1", IMAGENET_HW, 3, 64, 7, stride=2, padding=3)
    hw = _pool_out(hw, 3, 2, 1)  # maxpool 3x3 / 2, padding 1: 112 -> 56
    cin = 64
    expansion = 4 if bottleneck else 1
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for b in range(count):
            stride = 2 if (stage > 1 and b == 0) else 1
            p = f"layer{stage}.{b}"
            cout = planes * expansion
            if bottleneck:
                net.conv(f"{p}.conv1", hw, cin, planes, 1)
                out = net.conv(f"{p}.conv2", hw, planes, planes, 3, stride=stride, padding=1)
                net.conv(f"{p}.conv3", out, planes, cout, 1)
            else:
                out = net.conv(f"{p}.conv1", hw, cin, planes, 3, stride=stride, padding=1)
                net.conv(f"{p}.conv2", out, planes, planes, 3, padding=1)
            if stride != 1 or cin != cout:
                net.conv(f"{p}.downsample", hw, cin, cout, 1, stride=stride)
            hw, cin = out, cout
    net.fc("fc", 1, cin, IMAGENET_CLASSES)  # after global average pooling
    return net.workload(name, source)


def resnet18() -> Workload:
    """ResNet-18 (He et al., CVPR 2016), torchvision layout."""
    return _resnet("resnet18", (2, 2, 2, 2), False,
                   "He et al., Deep Residual Learning for Image Recognition, CVPR 2016, Table 1; "
                   "torchvision resnet18 layout; ImageNet 224x224, batch 1")


def resnet50() -> Workload:
    """ResNet-50 v1.5 (torchvision: stride 2 on the bottleneck's 3x3 conv)."""
    return _resnet("resnet50", (3, 4, 6, 3), True,
                   "He et al., CVPR 2016, Table 1; torchvision resnet50 (v1.5: stride on the "
                   "3x3 conv); ImageNet 224x224, batch 1")


def mobilenetv2() -> Workload:
    """MobileNetV2 1.0 (Sandler et al., CVPR 2018, Table 2), torchvision layout."""
    net = _Net()
    hw = net.conv("features.0", IMAGENET_HW, 3, 32, 3, stride=2, padding=1)
    cin = 32
    # (expansion t, output channels c, repeats n, first stride s): Sandler et al. Table 2
    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    idx = 1
    for t, c, n, s in settings:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            p = f"features.{idx}"
            if t != 1:
                net.conv(f"{p}.expand", hw, cin, hidden, 1)
            out = net.conv(f"{p}.depthwise", hw, hidden, hidden, 3, stride=stride, padding=1,
                           groups=hidden)
            net.conv(f"{p}.project", out, hidden, c, 1)
            hw, cin = out, c
            idx += 1
    net.conv(f"features.{idx}", hw, cin, 1280, 1)
    net.fc("classifier", 1, 1280, IMAGENET_CLASSES)
    return net.workload("mobilenetv2",
                        "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, "
                        "CVPR 2018, Table 2 (width 1.0); torchvision mobilenet_v2 layout; "
                        "ImageNet 224x224, batch 1")


def vgg16() -> Workload:
    """VGG-16, configuration D (Simonyan & Zisserman, ICLR 2015), no batch norm."""
    net = _Net()
    hw, cin = IMAGENET_HW, 3
    cfg = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
    idx = 0
    for v in cfg:
        if v == "M":
            hw = _pool_out(hw, 2, 2, 0)
        else:
            hw = net.conv(f"features.{idx}", hw, cin, v, 3, padding=1, bias=True, bn=False)
            cin = v
        idx += 1
    net.fc("classifier.0", 1, cin * hw * hw, 4096)  # 512 x 7 x 7 = 25088 inputs
    net.fc("classifier.3", 1, 4096, 4096)
    net.fc("classifier.6", 1, 4096, IMAGENET_CLASSES)
    return net.workload("vgg16",
                        "Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale "
                        "Image Recognition, ICLR 2015, configuration D; torchvision vgg16; "
                        "ImageNet 224x224, batch 1")


# --------------------------------------------------------------------------------------------
# Transformers
# --------------------------------------------------------------------------------------------
def _bert_like(name: str, *, layers: int, hidden: int, heads: int, ffn: int, seq: int,
               vocab: int, max_pos: int, type_vocab: int, source: str) -> Workload:
    """A BERT encoder (Hugging Face BertModel): post-LN layers with biases, then the pooler."""
    head_dim = hidden // heads
    out: list[Layer] = []
    for i in range(layers):
        p = f"encoder.{i}"
        out += [
            Gemm(f"{p}.query", m=seq, n=hidden, k=hidden, bias=True),
            Gemm(f"{p}.key", m=seq, n=hidden, k=hidden, bias=True),
            Gemm(f"{p}.value", m=seq, n=hidden, k=hidden, bias=True),
            BatchedMatmul(f"{p}.attn_scores", batch=heads, m=seq, n=seq, k=head_dim),   # Q K^T
            BatchedMatmul(f"{p}.attn_context", batch=heads, m=seq, n=head_dim, k=seq),  # P V
            Gemm(f"{p}.attn_output", m=seq, n=hidden, k=hidden, bias=True),
            Gemm(f"{p}.ffn_in", m=seq, n=ffn, k=hidden, bias=True),
            Gemm(f"{p}.ffn_out", m=seq, n=hidden, k=ffn, bias=True),
        ]
    out.append(Gemm("pooler", m=1, n=hidden, k=hidden, bias=True))  # on the [CLS] token
    embeddings = (vocab + max_pos + type_vocab) * hidden
    norms = (1 + 2 * layers) * 2 * hidden  # embedding LN + 2 LNs per layer, scale and shift
    return Workload(name, tuple(out), source=source, extra_params=embeddings + norms)


def bert_base() -> Workload:
    """BERT-base (uncased), sequence length 128."""
    return _bert_like("bert-base", layers=12, hidden=768, heads=12, ffn=3072, seq=128,
                      vocab=30522, max_pos=512, type_vocab=2,
                      source="Devlin et al., BERT, NAACL 2019 (BERT-base: L=12, H=768, A=12); "
                             "Hugging Face bert-base-uncased BertModel; seq 128, batch 1")


def minilm_l6() -> Workload:
    """MiniLM-L6-H384 (as in sentence-transformers/all-MiniLM-L6-v2), sequence length 128."""
    return _bert_like("minilm-l6", layers=6, hidden=384, heads=12, ffn=1536, seq=128,
                      vocab=30522, max_pos=512, type_vocab=2,
                      source="Wang et al., MiniLM, NeurIPS 2020; nreimers/MiniLM-L6-H384-uncased "
                             "= sentence-transformers/all-MiniLM-L6-v2 (L=6, H=384, A=12, "
                             "FFN 1536); seq 128, batch 1")


_LLAMA2_7B = dict(layers=32, hidden=4096, heads=32, ffn=11008, vocab=32000)


def _llama(name: str, *, tokens: int, context: int, source: str) -> Workload:
    """Llama-2-7B for ``tokens`` new tokens attending over ``context`` keys (RMSNorm, SwiGLU)."""
    layers, hidden, heads, ffn, vocab = (_LLAMA2_7B[k] for k in
                                         ("layers", "hidden", "heads", "ffn", "vocab"))
    head_dim = hidden // heads
    out: list[Layer] = []
    for i in range(layers):
        p = f"layers.{i}"
        out += [
            Gemm(f"{p}.q_proj", m=tokens, n=hidden, k=hidden),
            Gemm(f"{p}.k_proj", m=tokens, n=hidden, k=hidden),
            Gemm(f"{p}.v_proj", m=tokens, n=hidden, k=hidden),
            BatchedMatmul(f"{p}.attn_scores", batch=heads, m=tokens, n=context, k=head_dim),
            BatchedMatmul(f"{p}.attn_context", batch=heads, m=tokens, n=head_dim, k=context),
            Gemm(f"{p}.o_proj", m=tokens, n=hidden, k=hidden),
            Gemm(f"{p}.gate_proj", m=tokens, n=ffn, k=hidden),
            Gemm(f"{p}.up_proj", m=tokens, n=ffn, k=hidden),
            Gemm(f"{p}.down_proj", m=tokens, n=hidden, k=ffn),
        ]
    out.append(Gemm("lm_head", m=1, n=vocab, k=hidden))  # logits of the last position only
    embeddings = vocab * hidden  # input embedding table (the LM head is not tied to it)
    norms = (2 * layers + 1) * hidden  # RMSNorm scales: 2 per layer + final
    return Workload(name, tuple(out), source=source, extra_params=embeddings + norms)


def llama2_7b_prefill() -> Workload:
    """Llama-2-7B prefill of a 512-token prompt (full 512 x 512 attention, masked not skipped)."""
    return _llama("llama2-7b-prefill", tokens=512, context=512,
                  source="Touvron et al., Llama 2, arXiv:2307.09288, 2023 (7B: 32 layers, d=4096, "
                         "32 heads, FFN 11008 SwiGLU, vocab 32000); prefill of 512 tokens, batch 1")


def llama2_7b_decode() -> Workload:
    """Llama-2-7B decoding one token against a 2048-token KV cache."""
    return _llama("llama2-7b-decode", tokens=1, context=2048,
                  source="Touvron et al., Llama 2, arXiv:2307.09288, 2023 (7B); decode of one "
                         "token over a 2048-token KV cache, batch 1")


_BUILDERS: dict[str, Callable[[], Workload]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenetv2": mobilenetv2,
    "vgg16": vgg16,
    "bert-base": bert_base,
    "minilm-l6": minilm_l6,
    "llama2-7b-prefill": llama2_7b_prefill,
    "llama2-7b-decode": llama2_7b_decode,
}


def workload_names() -> tuple[str, ...]:
    """Names accepted by ``get_workload``."""
    return tuple(_BUILDERS)


@lru_cache(maxsize=None)
def get_workload(name: str) -> Workload:
    """The built-in workload ``name`` (see ``workload_names()``); records are immutable."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise WorkloadError(f"unknown workload {name!r}; built-in: "
                            f"{', '.join(_BUILDERS)}") from None
    return builder()
