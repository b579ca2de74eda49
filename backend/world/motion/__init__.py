"""LivingWorld's living dynamics (LIVINGWORLD.md stages 3-6): motion cues -> 3D scene flow -> geometry-aware
alignment -> hash-grid motion field -> bidirectional propagation baked to ``.lw4d``."""
