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
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass

from torch import nn

from .api import quantize
from .configs import Int4WeightOnlyConfig, Int8DynamicConfig, Int8StaticConfig, QATConfig
from .data import calibration_loader, digits_loaders
from .export import export, fuse_requantization
from .qat import convert
from .training import deterministic, evaluate, train
from .zoo import get_model, model_names

__all__ = ["Compressed", "QAT_EPOCHS", "QAT_LR", "RECIPES", "TARGET_DROP_PT",
           "compress_builtin", "recipe_config"]

RECIPES = ("int8-static", "int8-dynamic", "int4-weight-only", "qat-w4a4")
# issue 7's targets on the digits test split, drop from fp32 in percentage points
TARGET_DROP_PT = {"int8-static": 0.5, "int8-dynamic": 0.5, "int4-weight-only": 1.0,
                  "qat-w4a4": 1.5}
QAT_EPOCHS = 2
QAT_LR = 1e-3
QAT_BATCH = 32


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
    fp32_acc = evaluate(fp32, test_loader)
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
    notes = tuple(dict.fromkeys(str(w.message) for w in caught
                                if issubclass(w.category, RuntimeWarning)))
    return Compressed(model_name, recipe, config, fp32, exported, fp32_acc, sim_acc,
                      evaluate(exported, test_loader), notes)
