"""envlab: an environment matrix lab for PyTorch/CUDA stacks."""

__version__ = "0.1.0"
