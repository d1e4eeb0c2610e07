"""The digits transfer demo: ``repurpose demo``, ``make demo`` and ``examples/digits_transfer.py``.

A small CNN is pretrained on scikit-learn's digits 0-4 (cached after the first run), then
repurposed to digits 5-9 from K labelled images per class. The table compares every
registered meta-model repurposer on several feature layers with two baselines: logistic
regression on raw pixels, and the same CNN trained from scratch on the K examples.

Set ``REPURPOSE_SMOKE=1`` (or ``smoke=True``) for a few-second version.

Examples
--------
>>> from repurpose.demo import run_demo, format_table
>>> result = run_demo(smoke=True, progress=False)  # doctest: +SKIP
>>> print(format_table(result))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from repurpose.datasets import (
    digits_cnn,
    load_digits_split,
    pretrained_digits_cnn,
    train_classifier,
)
from repurpose.datasets._digits import SOURCE_CLASSES, TARGET_CLASSES
from repurpose.model_handler import ModelHandler
from repurpose.repurposers import (
    LogisticRegressionRepurposer,
    MetaModelRepurposer,
    get_repurposer_class,
    list_repurposers,
)

__all__ = ["DemoResult", "run_demo", "format_table", "main", "smoke_mode"]

DEFAULT_KS = (5, 10, 20, 50)
DEFAULT_LAYERS = ("conv2", "fc6", "fc7", "fc6+fc7")
PIXELS = "LR on raw pixels"
SCRATCH = "CNN from scratch"


@dataclass
class DemoResult:
    """Test accuracies of the demo.

    Attributes
    ----------
    ks : list of int
        The K values (labelled images per class), in column order.
    rows : dict
        ``{(method, layer): {K: accuracy}}``; baselines have layer ``"-"``. Accuracies are
        averaged over seeds; NaN if the method failed (see ``errors``).
    n_test : dict
        ``{K: number of test images}``.
    seconds : float
        Wall time of the whole run, including pretraining when not cached.
    errors : dict
        ``{method: error message}`` for repurposers that raised.
    """

    ks: list[int]
    rows: dict[tuple[str, str], dict[int, float]]
    n_test: dict[int, int]
    seconds: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)


def smoke_mode() -> bool:
    """True when the environment variable ``REPURPOSE_SMOKE`` is ``1``."""
    return os.environ.get("REPURPOSE_SMOKE", "") == "1"


def run_demo(
    ks: Sequence[int] | None = None,
    layers: Sequence[str] | None = None,
    repurposers: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    smoke: bool | None = None,
    progress: bool = True,
) -> DemoResult:
    """Run the digits transfer experiment.

    Parameters
    ----------
    ks : sequence of int, optional
        Labelled images per target class (default 5, 10, 20, 50).
    layers : sequence of str, optional
        Feature layers; ``"fc6+fc7"`` combines two layers (default conv2, fc6, fc7, fc6+fc7).
    repurposers : sequence of str, optional
        Registered meta-model repurposer names (default: all registered meta-models).
    seeds : sequence of int
        Seeds of the K-shot draw; accuracies are averaged over them.
    smoke : bool, optional
        A few-second version (one K, one layer, LR only, short training). Default:
        :func:`smoke_mode`.
    progress : bool
        Show progress bars.

    Returns
    -------
    DemoResult
    """
    start = time.perf_counter()
    smoke = smoke_mode() if smoke is None else smoke
    if smoke:
        ks, layers, repurposers = ks or (5,), layers or ("conv2",), repurposers or ("lr",)
    ks = list(ks or DEFAULT_KS)
    layers = list(layers or DEFAULT_LAYERS)
    names = list(repurposers or _meta_model_names())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the models are tiny: threads cost more than they give
    try:
        net = pretrained_digits_cnn(epochs=2 if smoke else 20, progress=progress)
        handler = ModelHandler(net)
        result = DemoResult(ks, {}, {})
        total = len(ks) * len(seeds) * (len(names) * len(layers) + 2)
        with tqdm(total=total, desc="repurposing", disable=not progress) as bar:
            for k in ks:
                for seed in seeds:
                    _one_split(handler, k, seed, names, layers, smoke, result, bar)
    finally:
        torch.set_num_threads(threads)
    for row in result.rows.values():
        for k, accs in row.items():
            row[k] = float(np.mean(accs))
    result.seconds = time.perf_counter() - start
    return result


def _meta_model_names() -> list[str]:
    names = [n for n in list_repurposers()
             if issubclass(get_repurposer_class(n), MetaModelRepurposer)]
    builtin = [n for n in ("lr", "svm", "mlp") if n in names]  # the built-ins first
    return builtin + [n for n in names if n not in builtin]


def _one_split(
    handler: ModelHandler, k: int, seed: int, names: Sequence[str], layers: Sequence[str],
    smoke: bool, result: DemoResult, bar: tqdm,
) -> None:
    split = load_digits_split(k, seed=seed)
    result.n_test[k] = len(split.y_test)
    needed = sorted({name for spec in layers for name in spec.split("+")})
    # "flatten" keeps the spatial layout of conv features, which transfers best here.
    train = handler.extract(split.X_train, needed, pooling="flatten", progress=False)
    test = handler.extract(split.X_test, needed, pooling="flatten", progress=False)
    for name in names:
        cls = get_repurposer_class(name)
        for spec in layers:
            bar.set_postfix_str(f"K={k} {name} @ {spec}")
            acc = _meta_model_accuracy(cls, handler, spec, train, test, split, result)
            _add(result, (name, spec), k, acc)
            bar.update()
    pixels = LogisticRegressionRepurposer(progress=False).fit_features(
        {"pixels": split.X_train.reshape(len(split.X_train), -1)}, split.y_train)
    pred = pixels.predict_features({"pixels": split.X_test.reshape(len(split.X_test), -1)})
    _add(result, (PIXELS, "-"), k, float(np.mean(pred == split.y_test)))
    bar.update()
    _add(result, (SCRATCH, "-"), k, _scratch_accuracy(split, seed, smoke))
    bar.update()


def _meta_model_accuracy(cls, handler, spec, train, test, split, result) -> float:  # type: ignore[no-untyped-def]
    try:
        rep = cls._demo_instance(handler, spec.split("+"))
        if rep is None:  # the class opted out of the demo
            return math.nan
        rep.fit_features(train, split.y_train)
        return float(np.mean(rep.predict_features(test) == split.y_test))
    except Exception as err:  # noqa: BLE001 - one broken plug-in must not stop the demo
        result.errors[cls.__name__] = f"{type(err).__name__}: {err}"
        return math.nan


def _scratch_accuracy(split, seed: int, smoke: bool) -> float:  # type: ignore[no-untyped-def]
    """The demo's CNN, freshly initialised, trained on the K-shot set only."""
    codes = np.searchsorted(np.array(TARGET_CLASSES), split.y_train)
    net = digits_cnn(n_classes=len(TARGET_CLASSES), seed=seed + 1)
    steps = 20 if smoke else 300
    batch = 32
    epochs = max(1, math.ceil(steps / math.ceil(len(codes) / batch)))
    train_classifier(net, split.X_train, codes, epochs=epochs, batch_size=batch, lr=3e-3,
                     seed=seed, progress=False)
    with torch.no_grad():
        pred = net(torch.as_tensor(split.X_test)).argmax(1).numpy()
    return float(np.mean(np.array(TARGET_CLASSES)[pred] == split.y_test))


def _add(result: DemoResult, key: tuple[str, str], k: int, acc: float) -> None:
    result.rows.setdefault(key, {}).setdefault(k, []).append(acc)  # type: ignore[arg-type, attr-defined]


def format_table(result: DemoResult) -> str:
    """The accuracy table as text.

    Parameters
    ----------
    result : DemoResult

    Returns
    -------
    str
    """
    lines = [
        f"Digits transfer: CNN pretrained on digits {SOURCE_CLASSES[0]}-{SOURCE_CLASSES[-1]}, "
        f"repurposed to {TARGET_CLASSES[0]}-{TARGET_CLASSES[-1]} with K labelled images per "
        "class.",
        "Test accuracy (" + ", ".join(f"K={k}: {n} images" for k, n in result.n_test.items())
        + ")",
        "",
    ]
    width = max(len(m) for m, _ in result.rows) + 2
    header = f"{'method':<{width}}{'layer':<10}" + "".join(f"{'K=' + str(k):>8}" for k in result.ks)
    lines += [header, "-" * len(header)]
    for (method, layer), accs in result.rows.items():
        cells = "".join(_cell(accs.get(k, math.nan)) for k in result.ks)
        lines.append(f"{method:<{width}}{layer:<10}{cells}")
    for name, err in result.errors.items():
        lines.append(f"note: {name} failed: {err}")
    lines.append(f"\nwall time {result.seconds:.1f} s")
    return "\n".join(lines)


def _cell(acc: float) -> str:
    return f"{'-':>8}" if math.isnan(acc) else f"{acc:>8.3f}"


def main(smoke: bool | None = None, progress: bool = True) -> DemoResult:
    """Run the demo and print the table (what ``repurpose demo`` does).

    Returns
    -------
    DemoResult
    """
    result = run_demo(smoke=smoke, progress=progress)
    print(format_table(result))
    return result
