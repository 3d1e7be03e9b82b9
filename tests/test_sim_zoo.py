"""The workload zoo against published MAC and parameter counts (sources named per case).

Two kinds of reference:
* the figure a paper or model card publishes, rounded as published: checked within a stated
  tolerance (rounding of the published figure plus the counting conventions noted per case);
* the exact parameter count of the reference implementation the architecture follows
  (torchvision, Hugging Face), which ``Workload.total_params`` must equal to the unit: this
  proves the layer shapes, biases and the non-MAC weights (BatchNorm / LayerNorm / RMSNorm
  scales, embeddings) in ``extra_params`` are all right.
"""
from __future__ import annotations

import pytest

from lowbit.simulator.workload import BatchedMatmul, Conv2d, Gemm, WorkloadError
from lowbit.simulator.zoo import get_workload, workload_names

NAMES = ("resnet18", "resnet50", "mobilenetv2", "vgg16", "bert-base", "minilm-l6",
         "llama2-7b-prefill", "llama2-7b-decode")

# (network, published MACs, relative tolerance, source and why the tolerance)
PUBLISHED_MACS = [
    ("resnet18", 1.81e9, 0.005,
     "torchvision ResNet18_Weights.IMAGENET1K_V1 docs: 1.81 GFLOPS (multiply-adds); He et al., "
     "CVPR 2016, Table 1: 1.8e9. Tolerance: 3 significant digits (0.3%)."),
    ("resnet50", 4.09e9, 0.005,
     "torchvision ResNet50_Weights.IMAGENET1K_V1 docs: 4.09 GFLOPS (v1.5, stride on the 3x3). "
     "He et al.'s 3.8e9 is v1 (stride on the first 1x1), a different network."),
    ("mobilenetv2", 300e6, 0.005,
     "Sandler et al., CVPR 2018, Table 4: MobileNetV2 (1.0, 224) 300M multiply-adds. "
     "Tolerance: the figure is rounded to the nearest 10 M at best."),
    ("vgg16", 15.47e9, 0.005,
     "torchvision VGG16_Weights.IMAGENET1K_V1 docs: 15.47 GFLOPS (multiply-adds); commonly "
     "quoted as 15.5 G. Tolerance: rounding."),
    ("bert-base", 22.5e9 / 2, 0.01,
     "Sun et al., MobileBERT, ACL 2020, Table 4: BERT-base 22.5 GFLOPs at sequence length 128, "
     "i.e. 11.25 G multiply-adds. Tolerance 1%: 3-digit rounding plus the FLOPs of bias adds, "
     "softmax and LayerNorm a FLOP counter includes and lowbit's MAC count does not."),
]

# (network, published parameters, relative tolerance, source and why)
PUBLISHED_PARAMS = [
    ("resnet18", 11.7e6, 0.005, "torchvision docs: 11.7 M (11,689,512)"),
    ("resnet50", 25.6e6, 0.005, "torchvision docs: 25.6 M (25,557,032)"),
    ("mobilenetv2", 3.4e6, 0.035,
     "Sandler et al., CVPR 2018, Table 4: 3.4 M. The paper truncates to 2 digits: the reference "
     "implementations count 3.47 M conv + FC weights and 3.50 M with BatchNorm (torchvision "
     "3,504,872), 3.1% above 3.4 M; tolerance 3.5%."),
    ("vgg16", 138e6, 0.005, "Simonyan & Zisserman, ICLR 2015, Table 2: 138 M (configuration D)"),
    ("bert-base", 110e6, 0.01,
     "Devlin et al., NAACL 2019, Sec. 3: BERT-base 110 M. Hugging Face bert-base-uncased "
     "BertModel counts 109,482,240 (0.5% below; the paper rounds)."),
    ("minilm-l6", 22.7e6, 0.005,
     "Model card of sentence-transformers/all-MiniLM-L6-v2 (MiniLM-L6-H384, Wang et al. 2020): "
     "22.7 M parameters"),
    ("llama2-7b-prefill", 6.7e9, 0.01,
     "Touvron et al., Llama 2, 2023 (7B model; Meta's model card: 6.7 B / HF 6.74 B). "
     "Tolerance 1%: two-digit rounding."),
    ("llama2-7b-decode", 6.7e9, 0.01, "as llama2-7b-prefill: the same weights"),
]

# Exact parameter counts of the reference implementations (sum of numel of parameters).
EXACT_PARAMS = {
    "resnet18": 11_689_512,        # torchvision.models.resnet18
    "resnet50": 25_557_032,        # torchvision.models.resnet50
    "mobilenetv2": 3_504_872,      # torchvision.models.mobilenet_v2
    "vgg16": 138_357_544,          # torchvision.models.vgg16
    "bert-base": 109_482_240,      # transformers BertModel(bert-base-uncased), with pooler
    "minilm-l6": 22_713_216,       # transformers BertModel(nreimers/MiniLM-L6-H384-uncased)
    "llama2-7b-prefill": 6_738_415_616,  # transformers LlamaForCausalLM(Llama-2-7b-hf)
    "llama2-7b-decode": 6_738_415_616,
}


def test_names():
    assert workload_names() == NAMES


def test_unknown_name():
    with pytest.raises(WorkloadError, match="resnet18"):
        get_workload("resnet-18")


@pytest.mark.parametrize("name, macs, rel, source", PUBLISHED_MACS,
                         ids=[c[0] for c in PUBLISHED_MACS])
def test_macs_match_published(name, macs, rel, source):
    w = get_workload(name)
    if name == "bert-base":  # the published figure is the encoder's; leave the pooler out
        got = sum(layer.macs for layer in w.layers if layer.name != "pooler")
    else:
        got = w.macs
    assert got == pytest.approx(macs, rel=rel), source


@pytest.mark.parametrize("name, params, rel, source", PUBLISHED_PARAMS,
                         ids=[c[0] for c in PUBLISHED_PARAMS])
def test_params_match_published(name, params, rel, source):
    w = get_workload(name)
    assert w.total_params == pytest.approx(params, rel=rel), source


@pytest.mark.parametrize("name", NAMES)
def test_params_equal_reference_implementation(name):
    assert get_workload(name).total_params == EXACT_PARAMS[name]


def test_cnn_structure():
    r18 = get_workload("resnet18")
    assert len([l for l in r18.layers if isinstance(l, Conv2d)]) == 20
    conv1 = r18.layers[0]
    assert (conv1.out_h, conv1.padding, conv1.stride) == (112, 3, 2)
    assert r18.layers[-1] == Gemm("fc", m=1, n=1000, k=512, bias=True)
    r50 = get_workload("resnet50")
    assert len(r50.layers) == 54  # stem + 16 blocks x 3 + 4 downsample convs + fc
    convs = {l.name: l for l in r50.layers if isinstance(l, Conv2d)}
    assert convs["layer2.0.conv2"].stride == 2 and convs["layer2.0.conv1"].stride == 1  # v1.5
    assert convs["layer4.2.conv3"].out_h == 7
    mb = get_workload("mobilenetv2")
    dw = [l for l in mb.layers if isinstance(l, Conv2d) and l.groups > 1]
    assert len(dw) == 17
    assert all(l.groups == l.in_ch == l.out_ch and l.kernel_h == 3 for l in dw)
    assert mb.layers[-2].out_h == 7 and mb.layers[-1].k == 1280
    vgg = get_workload("vgg16")
    assert [l.k for l in vgg.layers if isinstance(l, Gemm)] == [25088, 4096, 4096]
    assert all(l.m == 1 for l in vgg.layers if isinstance(l, Gemm))


@pytest.mark.parametrize("name, layers, hidden, heads, ffn", [
    ("bert-base", 12, 768, 12, 3072), ("minilm-l6", 6, 384, 12, 1536)])
def test_encoder_structure_and_closed_form(name, layers, hidden, heads, ffn):
    seq = 128
    w = get_workload(name)
    bmm = [l for l in w.layers if isinstance(l, BatchedMatmul)]
    assert len(bmm) == 2 * layers
    assert all(l.batch == heads for l in bmm)
    scores = [l for l in bmm if l.name.endswith("attn_scores")]
    assert all((l.m, l.n, l.k) == (seq, seq, hidden // heads) for l in scores)
    assert all(l.m == seq for l in w.layers if isinstance(l, Gemm) and l.name != "pooler")
    per_layer = 4 * seq * hidden**2 + 2 * seq * hidden * ffn + 2 * seq**2 * hidden
    assert w.macs == layers * per_layer + hidden * hidden  # + pooler on [CLS]


@pytest.mark.parametrize("name, tokens, context", [
    ("llama2-7b-prefill", 512, 512), ("llama2-7b-decode", 1, 2048)])
def test_llama_structure_and_closed_form(name, tokens, context):
    """Touvron et al. 2023, 7B: L=32, d=4096, 32 heads, SwiGLU FFN 11008, vocab 32000."""
    L, d, f, v = 32, 4096, 11008, 32000
    w = get_workload(name)
    assert len(w.layers) == 9 * L + 1
    gemms = [l for l in w.layers if isinstance(l, Gemm)]
    assert all(l.m == tokens for l in gemms if l.name != "lm_head")
    assert w.layers[-1] == Gemm("lm_head", m=1, n=v, k=d)
    scores = [l for l in w.layers if l.name.endswith("attn_scores")]
    assert all((l.batch, l.m, l.n, l.k) == (32, tokens, context, 128) for l in scores)
    assert w.macs == tokens * L * (4 * d * d + 3 * d * f) + 2 * L * tokens * context * d + d * v
    if tokens == 1:
        # Decoding one token uses every weight once: the "2N FLOPs per token" rule
        # (Kaplan et al. 2020, Sec. 2.1) holds exactly for the weight layers.
        assert sum(l.macs for l in gemms) == w.params


def test_default_precisions_and_cache():
    for name in NAMES:
        w = get_workload(name)
        assert all(l.a_bits == 8 and l.w_bits == 8 for l in w.layers)
        assert w.source
        assert get_workload(name) is w
