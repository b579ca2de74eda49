"""LivingWorld backend: PyTorch pipelines behind an HTTP job service (see docs/ARCHITECTURE.md)."""

__version__ = "0.1.0"
