"""lowbit.compress: quantization, pruning and distillation. Not built yet (issues 7 and 8)."""
