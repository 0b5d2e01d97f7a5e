"""A tiny encoder: a linear map from image features to voxel responses (stands in for a real neuroimaging project)."""

from __future__ import annotations

__version__ = "0.1.0"


def encode(features, weights):  # noqa: ANN001, ANN201 - numpy or torch arrays alike
    """Predicted voxel responses: features (n, f) @ weights (f, v)."""
    return features @ weights
