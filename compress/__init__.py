"""lowbit.compress: quantization, pruning and distillation (issues 7 and 8).

Built so far: digits data, built-in models, training loops, metrics (``profile``) and the
simulator export (``to_workload``).
"""

# Data, built-in models, training loops, metrics and workload export (issue 7).
from .data import (DigitsData, calibration_loader, calibration_subset, digits_loaders,
                   load_digits_split)
from .metrics import LayerProfile, ModelProfile, profile
from .models import DigitsCNN, DigitsMLP, DigitsTransformer
from .trace import StorageError, StorageInfo, storage_of
from .training import Callback, TrainResult, TrainState, deterministic, evaluate, predict, train
from .workload import to_workload
from .zoo import Pretrained, TrainRecipe, get_model, load_pretrained, model_names
