"""sadc: Semi-supervised Adaptive Distillation for single-stage detectors."""

__version__ = "0.1.0"
