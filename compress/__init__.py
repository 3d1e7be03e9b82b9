"""lowbit.compress: quantization of torch models (PTQ static / dynamic, weight-only, QAT, mixed
precision) into integer-simulated layers that match lowbit's kernels; the digits data, built-in
models and training loops; metrics (``profile``) and the simulator export (``to_workload``);
pruning (``prune``: unstructured, N:M, structured channels through a dependency graph,
movement, lottery ticket; schedules, sensitivity); knowledge distillation (``distill``),
low-rank factorization (``factorize``), XNOR-Net binarization (``BinaryConfig``) and LoRA
recovery (``apply_lora``).

    >>> import torch
    >>> from torch import nn
    >>> from lowbit.compress import Int8StaticConfig, quantize
    >>> model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    >>> g = torch.Generator().manual_seed(0)
    >>> batches = [torch.randn(32, 16, generator=g) for _ in range(4)]
    >>> model = quantize(model, Int8StaticConfig(calibrator="minmax"), calibration=batches)
    >>> model[0].lowbit_storage()["format"]
    'int8'
"""
# Quantization.
from .api import calibrate, default_filter, quantize, register_handler
from .bnfold import conv_bn_pairs, fold_batchnorm
from .calibrators import (CALIBRATORS, Calibrator, EMAMinMaxCalibrator, KLCalibrator,
                          MinMaxCalibrator, MSECalibrator, PercentileCalibrator, make_calibrator)
from .configs import (Int4WeightOnlyConfig, Int8DynamicConfig, Int8StaticConfig,
                      IntxWeightOnlyConfig, QATConfig)
from .granularity import PerChannel, PerGroup, PerTensor
from .mixed import (BitAssignment, SensitivityTable, assign_bits, layer_sensitivity,
                    pareto_knapsack)
from .qat import FakeQuantize, QATConv2d, QATLinear, convert
from .qfunc import (QuantSpec, dequantize, dynamic_quantize_rows, fake_quantize,
                    lsq_fake_quantize, qparams, quantize_tensor)
from .qmodules import ActQuant, IntegerTrace, OutQuant, QuantConv2d, QuantLinear

# Export to lowbit's kernels (export, save / load) and the digits recipes (further below).
from .checkpoint import CHECKPOINT_VERSION, checkpoint_info, load, save
from .export import (Chain, ExportedLayer, ExportSummary, Unsupported, export, export_summary,
                     fuse_requantization, kernel_module)

# Pruning.
from .channel_plan import ChannelGroup, ChannelPlan
from .depgraph import ChannelGraph, trace_channels
from .masks import KeepMasks, MaskedConv2d, MaskedLayer, MaskedLinear, finalize, masked_layers
from .nm import is_nm, nm_mask
from .prune_api import (PruneHistory, PruneStep, channel_plan, default_prune_filter,
                        iterative_prune, prune, register_prune_handler)
from .prune_configs import (ChannelConfig, FineTune, LevelConfig, LotteryTicketConfig,
                            MovementConfig, NMConfig)
from .prune_sensitivity import PruneSensitivity, choose_sparsity, pruning_sensitivity
from .prune_training import SlimRegularizer, fine_tune
from .schedules import AGPSchedule, LinearSchedule, OneShot, agp_sparsity

# Compression II: distillation, low-rank, binarization, LoRA.
from .binary import (BinaryConfig, BinaryConv2d, BinaryLinear, BinaryTrace, sign_ste,
                     use_binary_kernels)
from .distill import (DistillConfig, DistillResult, distill, fitnets_loss, hinton_loss,
                      rkd_angle_loss, rkd_distance_loss)
from .lora import (LoRAConfig, LoRAConv2d, LoRALinear, LoRAShare, apply_lora, lora_parameters,
                   merge_lora, trainable_share)
from .lowrank import LowRankConfig, LowRankConv2d, LowRankLinear, factorize, low_rank_layers

# Data, built-in models, training loops, metrics and workload export.
from .data import (DigitsData, calibration_loader, calibration_subset, digits_loaders,
                   load_digits_split)
from .metrics import LayerProfile, ModelProfile, profile
from .models import DigitsCNN, DigitsMLP, DigitsTransformer
from .trace import StorageError, StorageInfo, storage_of
from .training import Callback, TrainResult, TrainState, deterministic, evaluate, predict, train
from .workload import to_workload
from .zoo import Pretrained, TrainRecipe, get_model, load_pretrained, model_names
from .recipes import RECIPES, TARGET_DROP_PT, Compressed, compress_builtin, recipe_config
from .recipes import (KD_EPOCHS, PipelineResult, PipelineStep, Stage, compress_pipeline,
                      distill_finetune, parse_pipeline)

__all__ = [
    "ActQuant", "BitAssignment", "CALIBRATORS", "Calibrator", "EMAMinMaxCalibrator",
    "FakeQuantize", "Int4WeightOnlyConfig", "Int8DynamicConfig", "Int8StaticConfig",
    "IntegerTrace", "IntxWeightOnlyConfig", "KLCalibrator", "MSECalibrator", "MinMaxCalibrator",
    "PerChannel", "PerGroup", "PerTensor", "PercentileCalibrator", "QATConfig", "QATConv2d",
    "QATLinear", "QuantConv2d", "QuantLinear", "QuantSpec", "SensitivityTable", "assign_bits",
    "calibrate", "conv_bn_pairs", "convert", "default_filter", "dequantize",
    "dynamic_quantize_rows", "fake_quantize", "fold_batchnorm", "layer_sensitivity",
    "lsq_fake_quantize", "make_calibrator", "pareto_knapsack", "qparams", "quantize",
    "quantize_tensor", "register_handler",
    "Callback", "DigitsCNN", "DigitsData", "DigitsMLP", "DigitsTransformer", "LayerProfile",
    "ModelProfile", "Pretrained", "StorageError", "StorageInfo", "TrainRecipe", "TrainResult",
    "TrainState", "calibration_loader", "calibration_subset", "deterministic", "digits_loaders",
    "evaluate", "get_model", "load_digits_split", "load_pretrained", "model_names", "predict",
    "profile", "storage_of", "to_workload", "train",
    "AGPSchedule", "ChannelConfig", "ChannelGraph", "ChannelGroup", "ChannelPlan", "FineTune",
    "KeepMasks", "LevelConfig", "LinearSchedule", "LotteryTicketConfig", "MaskedConv2d",
    "MaskedLayer", "MaskedLinear", "MovementConfig", "NMConfig", "OneShot", "PruneHistory",
    "PruneSensitivity", "PruneStep", "SlimRegularizer", "agp_sparsity", "channel_plan",
    "choose_sparsity", "default_prune_filter", "finalize", "fine_tune", "is_nm",
    "iterative_prune", "masked_layers", "nm_mask", "prune", "pruning_sensitivity",
    "register_prune_handler", "trace_channels",
    "BinaryConfig", "BinaryConv2d", "BinaryLinear", "BinaryTrace", "DistillConfig",
    "DistillResult", "LoRAConfig", "LoRAConv2d", "LoRALinear", "LoRAShare", "LowRankConfig", "LowRankConv2d",
    "LowRankLinear", "apply_lora", "distill", "factorize", "fitnets_loss", "hinton_loss",
    "lora_parameters", "low_rank_layers", "merge_lora", "rkd_angle_loss", "rkd_distance_loss",
    "sign_ste", "trainable_share", "use_binary_kernels",
    "Chain", "ExportedLayer", "ExportSummary", "OutQuant", "Unsupported", "export",
    "export_summary", "fuse_requantization", "kernel_module",
    "CHECKPOINT_VERSION", "checkpoint_info", "load", "save",
    "Compressed", "RECIPES", "TARGET_DROP_PT", "compress_builtin", "recipe_config",
    "KD_EPOCHS", "PipelineResult", "PipelineStep", "Stage", "compress_pipeline",
    "distill_finetune", "parse_pipeline",
]
