"""Replace a submodule of a model by its dotted name (shared by every in-place transform)."""
from __future__ import annotations

from torch import nn


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Set ``model.<name>`` to ``module`` (``name`` as in ``model.named_modules()``)."""
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)
