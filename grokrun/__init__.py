"""grokrun: reproducible grokking experiments with Grokfast gradient filters."""

__version__ = "0.1.0"
