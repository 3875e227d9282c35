"""darwin-operator: serve a giant model with vLLM on reserved GPUs as replica groups."""

__version__ = "0.1.0"
