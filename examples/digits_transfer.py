"""Transfer learning on built-in digits: the same run as `repurpose demo` / `make demo`.

A small CNN is pretrained on digits 0-4 (cached after the first run). We repurpose it to
digits 5-9 from K labelled images per class, first with the three-line API, then for every
registered meta-model repurposer, feature layer and K, next to two baselines.

Run from the repository root: ``python examples/digits_transfer.py``
(``REPURPOSE_SMOKE=1`` shrinks it to a few seconds).
"""

import tempfile
from pathlib import Path

import repurpose as rp
from repurpose.datasets import load_digits_split, pretrained_digits_cnn
from repurpose.demo import format_table, run_demo, smoke_mode

smoke = smoke_mode()

# 1. The three-line API on one task: 10 labelled images per class.
handler = rp.ModelHandler(pretrained_digits_cnn(epochs=2 if smoke else 20))
split = load_digits_split(k_per_class=10)
rep = rp.LogisticRegressionRepurposer(handler, feature_layers=["conv2"], pooling="flatten")
rep.fit(split.X_train, split.y_train)
proba = rep.predict_proba(split.X_test)
print(f"LR on conv2 features, K=10: test accuracy {rep.score(split.X_test, split.y_test):.3f}")

# 2. Save without pickle, load, and predict again with no other files.
with tempfile.TemporaryDirectory() as tmp:
    rep.save(Path(tmp) / "digits_rep")
    loaded = rp.load(Path(tmp) / "digits_rep")
    assert (loaded.predict_proba(split.X_test) == proba).all()
    print("saved and reloaded: identical predictions")

# 3. The full comparison table.
print(format_table(run_demo(smoke=smoke)))
