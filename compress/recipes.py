"""Built-in compression recipes on the digits models: quantize, export, measure accuracy.

``compress_builtin("digits-cnn", "int8-static")`` runs one recipe end to end with fixed
seeds and returns the exported model (running on lowbit's kernels) with its accuracy on the
digits test split next to fp32 and the torch simulation. Recipes (``RECIPES``):

* ``int8-static``: ``Int8StaticConfig(calibrator)`` on ``data.calibration_loader()`` (256
  training images), W8A8 with fused requantization between static layers;
* ``int8-dynamic``: ``Int8DynamicConfig()``;
* ``int4-weight-only``: ``Int4WeightOnlyConfig(group_size)``; layers whose K is not a
  multiple of the group size stay fp32 (the note says which);
* ``qat-w4a4``: ``QATConfig(weight_bits=4, act_bits=4)`` (per-channel weights, asymmetric
  per-tensor activations with running min/max), fine-tuned ``QAT_EPOCHS`` epochs from the
  fp32 weights (AdamW, lr ``QAT_LR``, cosine, batch 32, ``training.deterministic(seed)``),
  exported on the int8 kernels with 4-bit values.

``TARGET_DROP_PT`` holds the accuracy targets of issue 7 (drop in percentage points from
fp32, measured on the exported model).

``compress_pipeline("digits-cnn", "prune-l1:0.5,distill,int8-static")`` chains steps
(issue 8's prune -> distill -> quantize -> export), keeping the model after each one:

* ``prune-<criterion>:<ratio>``: structured channel pruning, ``ChannelConfig(ratio,
  criterion)`` (criteria ``CHANNEL_CRITERIA``; the data-driven ones rank on
  ``calibration_loader()``): the model is physically smaller;
* ``distill`` or ``distill:<epochs>``: offline Hinton KD from the fp32 model
  (``distill_finetune``: T = 4, lambda = 0.5, ``KD_EPOCHS`` epochs, Adam at ``KD_LR``);
* a recipe of ``RECIPES`` (last): quantize as ``compress_builtin`` does and export to the
  kernels. When the pipeline also prunes, the dense fp32 model goes through the same
  recipe (same config, calibration data and seed) as the ``reference`` the pruned model's
  kernel latency is compared with.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Callable

from torch import nn

from .api import quantize
from .configs import Int4WeightOnlyConfig, Int8DynamicConfig, Int8StaticConfig, QATConfig
from .data import calibration_loader, digits_loaders
from .distill import DistillConfig, distill
from .export import export, fuse_requantization
from .masks import KeepMasks
from .prune_api import prune
from .prune_configs import CHANNEL_CRITERIA, DATA_CRITERIA, ChannelConfig
from .qat import convert
from .training import deterministic, evaluate, train
from .zoo import get_model, model_names

__all__ = ["Compressed", "KD_EPOCHS", "KD_LR", "PipelineResult", "PipelineStep",
           "QAT_EPOCHS", "QAT_LR", "RECIPES", "Stage", "TARGET_DROP_PT", "compress_builtin",
           "compress_pipeline", "distill_finetune", "parse_pipeline", "recipe_config"]

RECIPES = ("int8-static", "int8-dynamic", "int4-weight-only", "qat-w4a4")
# issue 7's targets on the digits test split, drop from fp32 in percentage points
TARGET_DROP_PT = {"int8-static": 0.5, "int8-dynamic": 0.5, "int4-weight-only": 1.0,
                  "qat-w4a4": 1.5}
QAT_EPOCHS = 2
QAT_LR = 1e-3
QAT_BATCH = 32
KD_EPOCHS = 4
KD_LR = 1e-3


def recipe_config(recipe: str, *, calibrator: str = "kl", group_size: int = 32):
    """The quantization config of ``recipe`` (validated by the config itself)."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe: unknown {recipe!r}; use one of {', '.join(RECIPES)}")
    return {"int8-static": lambda: Int8StaticConfig(calibrator=calibrator),
            "int8-dynamic": Int8DynamicConfig,
            "int4-weight-only": lambda: Int4WeightOnlyConfig(group_size=group_size),
            "qat-w4a4": lambda: QATConfig(weight_bits=4, act_bits=4)}[recipe]()


@dataclass(frozen=True, eq=False)
class Compressed:
    """One recipe's result: the fp32 and exported models, their top-1 accuracies on the
    digits test split (fractions), the torch simulation's (``quantize`` / ``convert`` and
    ``fuse_requantization``: what is exported), and notes (layers left in fp32 and why,
    from the library's warnings)."""

    model_name: str
    recipe: str
    config: object
    fp32: nn.Module
    exported: nn.Module
    fp32_accuracy: float
    simulated_accuracy: float
    accuracy: float
    notes: tuple[str, ...]

    @property
    def drop_pt(self) -> float:
        """fp32 accuracy minus exported accuracy, in percentage points."""
        return 100.0 * (self.fp32_accuracy - self.accuracy)

    @property
    def target_pt(self) -> float:
        return TARGET_DROP_PT[self.recipe]

    def config_record(self) -> dict:
        """The recipe and its config as plain data (for ``checkpoint.save``)."""
        fields = {f.name: getattr(self.config, f.name)
                  for f in dataclasses.fields(self.config)}
        return {"recipe": self.recipe, "class": type(self.config).__name__,
                "fields": {k: v if v is None or isinstance(v, (bool, int, float, str))
                           else repr(v) for k, v in fields.items()}}


def compress_builtin(model_name: str, recipe: str, *, calibrator: str = "kl",
                     group_size: int = 32, seed: int = 0, simulate: bool = True
                     ) -> Compressed:
    """Run ``recipe`` on the built-in ``model_name`` (trained / cached by ``get_model``).

    Args:
        model_name: "digits-cnn", "digits-mlp" or "digits-transformer".
        recipe: one of ``RECIPES``.
        calibrator: int8-static: "kl", "mse", "percentile", "minmax" or "ema".
        group_size: int4-weight-only: 32, 64 or 128.
        seed: the QAT fine-tune's seed.
        simulate: also measure the torch simulation's accuracy (seconds on the CNN:
            its integer convolutions run in float64); else ``simulated_accuracy`` is NaN.

    Example:
        >>> r = compress_builtin("digits-cnn", "int8-static")   # doctest: +SKIP
        >>> r.fp32_accuracy, r.accuracy, r.drop_pt <= r.target_pt   # doctest: +SKIP
    """
    if model_name not in model_names():
        raise ValueError(f"model: unknown {model_name!r}; use one of {', '.join(model_names())}")
    config = recipe_config(recipe, calibrator=calibrator, group_size=group_size)
    fp32 = get_model(model_name)
    _, test_loader = digits_loaders()
    exported, sim_acc, notes = _quantize_export(fp32, recipe, config, seed, simulate,
                                                test_loader)
    return Compressed(model_name, recipe, config, fp32, exported, evaluate(fp32, test_loader),
                      sim_acc, evaluate(exported, test_loader), notes)


def _quantize_export(fp32: nn.Module, recipe: str, config, seed: int, simulate: bool,
                     test_loader) -> tuple[nn.Module, float, tuple[str, ...]]:
    """(exported copy of ``fp32`` quantized by ``recipe`` / ``config``, the simulation's
    accuracy or NaN, the RuntimeWarnings' texts); ``fp32`` is not modified."""
    model = copy.deepcopy(fp32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        if recipe == "qat-w4a4":
            quantize(model, config)
            train_loader, _ = digits_loaders(QAT_BATCH, seed=seed)
            with deterministic(seed):
                train(model, train_loader, epochs=QAT_EPOCHS, lr=QAT_LR, optimizer="adamw",
                      weight_decay=0.0)
            convert(model)
        else:
            calibration = calibration_loader() if recipe == "int8-static" else None
            quantize(model, config, calibration=calibration)
        fuse_requantization(model)  # the simulation of exactly what is exported
        sim_acc = evaluate(model, test_loader) if simulate else float("nan")
        exported = export(model)
    return exported, sim_acc, _texts(caught)


def _texts(caught) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(w.message) for w in caught
                               if issubclass(w.category, RuntimeWarning)))


def distill_finetune(teacher: nn.Module, student: nn.Module, *, epochs: int = KD_EPOCHS,
                     lr: float = KD_LR, seed: int = 0, keep_masks: bool = False) -> nn.Module:
    """Fine-tune ``student`` by offline knowledge distillation from ``teacher`` on the digits
    train split (batch 64, reshuffled with ``seed``), in place; returns the student.

    Loss (1 - lam) T^2 KL(p_t || p_s) + lam CE with ``DistillConfig()`` (T = 4, lam = 0.5;
    Hinton et al., Distilling the Knowledge in a Neural Network, 2015), Adam with a cosine
    schedule under ``deterministic(seed)``. ``keep_masks``: keep pruning masks fixed
    (``KeepMasks``, for masked N:M / level models).

    Example:
        >>> student = prune(copy.deepcopy(teacher), ChannelConfig(0.5),   # doctest: +SKIP
        ...                 example_input=torch.zeros(1, 1, 8, 8))
        >>> distill_finetune(teacher, student, epochs=4)                  # doctest: +SKIP
    """
    train_loader, _ = digits_loaders(seed=seed)
    with deterministic(seed):
        distill(teacher, student, train_loader, DistillConfig(), epochs=epochs, lr=lr,
                callbacks=(KeepMasks(student),) if keep_masks else ())
    return student


# --- pipelines ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PipelineStep:
    """One step of a pipeline: ``kind`` ("prune", "distill" or "quantize"), ``text`` as
    written, and its argument: a ``ChannelConfig``, the KD epochs, or the recipe name."""

    kind: str
    text: str
    arg: object


def _step(text: str, kd_epochs: int) -> PipelineStep:
    name, _, value = text.partition(":")
    if text in RECIPES:
        return PipelineStep("quantize", text, text)
    if name == "distill":
        epochs = kd_epochs if not value else _number(text, value, int)
        if epochs < 1:
            raise ValueError(f"config: {text!r}: distillation epochs must be >= 1")
        return PipelineStep("distill", text, epochs)
    if name.startswith("prune-"):
        criterion = name.removeprefix("prune-")
        if criterion not in CHANNEL_CRITERIA or not value:
            raise ValueError(f"config: {text!r}: write prune-<criterion>:<ratio> with a "
                             f"criterion of {', '.join(CHANNEL_CRITERIA)}, e.g. prune-l1:0.5")
        ratio = _number(text, value, float)
        try:
            config = ChannelConfig(ratio, criterion=criterion)
        except ValueError as e:
            raise ValueError(f"config: {text!r}: {e}") from e
        return PipelineStep("prune", text, config)
    raise ValueError(f"config: unknown step {text!r}; steps are prune-<criterion>:<ratio>, "
                     f"distill[:<epochs>] and one recipe of {', '.join(RECIPES)} (last)")


def _number(text: str, value: str, kind: type):
    try:
        return kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"config: {text!r}: {value!r} is not {what}") from None


def parse_pipeline(spec: str, *, kd_epochs: int = KD_EPOCHS) -> tuple[PipelineStep, ...]:
    """The steps of a pipeline ``spec`` (comma-separated, see the module doc).

    Example:
        >>> [s.kind for s in parse_pipeline("prune-l1:0.5,distill,int8-static")]
        ['prune', 'distill', 'quantize']
        >>> parse_pipeline("int8-static,distill")
        Traceback (most recent call last):
        ValueError: config: 'int8-static' must be the last step (quantize and export end a pipeline)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"config: give the steps, e.g. 'prune-l1:0.5,distill,int8-static'; "
                         f"got {spec!r}")
    steps = tuple(_step(t.strip(), kd_epochs) for t in spec.split(","))
    for s in steps[:-1]:
        if s.kind == "quantize":
            raise ValueError(f"config: {s.text!r} must be the last step (quantize and export "
                             f"end a pipeline)")
    return steps


@dataclass(frozen=True, eq=False)
class Stage:
    """A pipeline's model after one step: ``step`` ("fp32" for the starting model), the
    model (its own copy), its top-1 accuracy on the digits test split, whether it runs on
    lowbit's kernels (exported), the simulation's accuracy (quantize steps; NaN when not
    measured) and the step's RuntimeWarnings."""

    step: str
    model: nn.Module
    accuracy: float
    on_kernels: bool = False
    simulated_accuracy: float | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class PipelineResult:
    """``compress_pipeline``'s answer: the steps, one ``Stage`` per step after the fp32
    start, and ``reference``: the dense fp32 model through the same quantize step (exported),
    when the pipeline prunes and quantizes (else None)."""

    model_name: str
    steps: tuple[PipelineStep, ...]
    stages: tuple[Stage, ...]
    reference: Stage | None

    @property
    def fp32(self) -> Stage:
        return self.stages[0]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def drop_pt(self, stage: Stage) -> float:
        """fp32 accuracy minus ``stage``'s, in percentage points."""
        return 100.0 * (self.fp32.accuracy - stage.accuracy)


def compress_pipeline(model: str | nn.Module, spec: str, *, calibrator: str = "kl",
                      group_size: int = 32, seed: int = 0, kd_epochs: int = KD_EPOCHS,
                      simulate: bool = True, reference: bool = True,
                      on_stage: Callable[[Stage], None] | None = None) -> PipelineResult:
    """Run the pipeline ``spec`` (e.g. "prune-l1:0.5,distill,int8-static") on a digits model.

    Steps in order on a copy of the fp32 model (see the module doc): structured channel
    pruning (physically smaller), offline KD from the fp32 model, and a quantization recipe
    that exports to lowbit's kernels. Each step's model is kept (``Stage``) with its test
    accuracy; ``on_stage(stage)`` is called as each one is ready (the fp32 start first).

    Args:
        model: a built-in model name ("digits-cnn", ...) or a trained fp32 nn.Module that
            takes digits images (not modified).
        spec: comma-separated steps; ``parse_pipeline`` checks them before anything runs.
        calibrator, group_size, seed: of the quantize step, as in ``compress_builtin``;
            ``seed`` also seeds the KD runs.
        kd_epochs: epochs of a ``distill`` step without its own count.
        simulate: measure the quantize step's simulation accuracy too.
        reference: when the pipeline prunes and quantizes, also quantize and export the
            dense fp32 model the same way (``PipelineResult.reference``).

    Example:
        >>> spec = "prune-l1:0.5,distill,int8-static"
        >>> r = compress_pipeline("digits-cnn", spec)           # doctest: +SKIP
        >>> r.final.accuracy, r.reference.accuracy             # doctest: +SKIP
    """
    steps = parse_pipeline(spec, kd_epochs=kd_epochs)
    if isinstance(model, str):
        if model not in model_names():
            raise ValueError(f"model: unknown {model!r}; use one of {', '.join(model_names())}")
        name, fp32 = model, get_model(model)
    elif isinstance(model, nn.Module):
        name, fp32 = type(model).__name__, model
    else:
        raise TypeError(f"model: must be a model name or an nn.Module, got {type(model).__name__}")
    quant = next((s for s in steps if s.kind == "quantize"), None)
    config = None if quant is None else recipe_config(quant.arg, calibrator=calibrator,
                                                      group_size=group_size)
    _, test_loader = digits_loaders()
    notify = on_stage or (lambda stage: None)
    stages = [Stage("fp32", fp32, evaluate(fp32, test_loader))]
    notify(stages[0])
    current = copy.deepcopy(fp32)
    example = next(iter(test_loader))[0][:1]
    for step in steps:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            if step.kind == "prune":
                data = calibration_loader() if step.arg.criterion in DATA_CRITERIA else None
                prune(current, step.arg, data=data, example_input=example)
            elif step.kind == "distill":
                distill_finetune(fp32, current, epochs=step.arg, seed=seed)
        if step.kind == "quantize":
            exported, sim_acc, notes = _quantize_export(current, step.arg, config, seed,
                                                        simulate, test_loader)
            stage = Stage(step.text, exported, evaluate(exported, test_loader), True, sim_acc,
                          notes)
        else:
            stage = Stage(step.text, copy.deepcopy(current), evaluate(current, test_loader),
                          notes=_texts(caught))
        stages.append(stage)
        notify(stage)
    ref = None
    if reference and quant is not None and any(s.kind == "prune" for s in steps):
        exported, sim_acc, notes = _quantize_export(fp32, quant.arg, config, seed, simulate,
                                                    test_loader)
        ref = Stage(f"dense {quant.text}", exported, evaluate(exported, test_loader), True,
                    sim_acc, notes)
    return PipelineResult(name, steps, tuple(stages), ref)
