"""The library's exceptions, in one flat module.

Errors raised by lower layers (protobuf, torch, numpy, file I/O) are translated at the
boundary into these types with ``raise ... from err``, so users catch one family.
"""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

__all__ = [
    "RepurposeError",
    "ModelFormatError",
    "UnsupportedLayerError",
    "LayerNotFoundError",
    "SurgeryError",
    "NotFittedError",
    "UnsafeFileError",
    "RandomWeightsWarning",
]


class RepurposeError(Exception):
    """Base class of every error this library raises on purpose."""


class ModelFormatError(RepurposeError, ValueError):
    """A model or weights file is malformed, truncated, or does not match its network."""


class UnsupportedLayerError(RepurposeError, NotImplementedError):
    """A layer or op type has no converter. The message lists the supported types."""


class LayerNotFoundError(RepurposeError, ValueError):
    """A layer name is not in the network. The message lists the closest matches."""


class SurgeryError(RepurposeError, ValueError):
    """A network edit (cut, drop, add) would leave a broken model."""


class NotFittedError(RepurposeError, _SklearnNotFittedError):
    """A repurposer was used before ``fit``. Also a scikit-learn ``NotFittedError``."""


class UnsafeFileError(RepurposeError, ValueError):
    """A saved file would need code execution (for example a pickle) to load, and was refused."""


class RandomWeightsWarning(UserWarning):
    """A network was built without its weights file, so it runs on random weights."""


def warn_random_weights(model: str, weights: str) -> None:
    """Warn that ``model`` was imported without its weights file."""
    import warnings

    warnings.warn(
        f"{model!r} was imported without weights, so its layers are random: features and "
        f"predictions are meaningless. Pass {weights} to import the trained network.",
        RandomWeightsWarning, stacklevel=3,
    )
