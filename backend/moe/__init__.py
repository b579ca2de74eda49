"""MoE-GS: multi-view video datasets, dynamic Gaussian experts, training, evaluation and export."""
