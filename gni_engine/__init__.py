"""gni_engine: Gaussian noise injections, their explicit regulariser, and batched training.

A pure library: it imports torch, numpy and pydantic, never the web, queue or database stack.
Importing the package itself is cheap; the numerical modules import torch.
"""

__version__ = "0.2.0"
