"""heartbench: a reproducible benchmark suite for parameter-efficient fine-tuning of ViTs."""

__version__ = "0.1.0"
