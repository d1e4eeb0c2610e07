"""Built-in data for examples, tests and the demo (nothing is downloaded)."""

from repurpose.datasets._digits import (
    DigitsSplit,
    cache_dir,
    digits_cnn,
    load_digits_split,
    pretrained_digits_cnn,
    train_classifier,
)

__all__ = [
    "DigitsSplit",
    "load_digits_split",
    "digits_cnn",
    "pretrained_digits_cnn",
    "train_classifier",
    "cache_dir",
]
