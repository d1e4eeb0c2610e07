"""solver.prototxt and lr_mult/decay_mult as plain data; the schedule against Caffe's loop."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import repurpose.caffe as rc
from repurpose._exceptions import ModelFormatError


def caffe_rates(s: rc.CaffeSolver, n: int) -> list[float]:
    """Port of SGDSolver::GetLearningRate over iterations 0..n-1, with its current_step_
    state for multistep (advanced once per iteration, as Caffe's solver loop does)."""
    rates, current_step = [], 0
    for it in range(n):
        if s.lr_policy == "fixed":
            rate = s.base_lr
        elif s.lr_policy == "step":
            current_step = it // s.stepsize
            rate = s.base_lr * math.pow(s.gamma, current_step)
        elif s.lr_policy == "exp":
            rate = s.base_lr * math.pow(s.gamma, it)
        elif s.lr_policy == "inv":
            rate = s.base_lr * math.pow(1.0 + s.gamma * it, -s.power)
        elif s.lr_policy == "multistep":
            if current_step < len(s.stepvalue) and it >= s.stepvalue[current_step]:
                current_step += 1
            rate = s.base_lr * math.pow(s.gamma, current_step)
        elif s.lr_policy == "poly":
            rate = s.base_lr * math.pow(1.0 - float(it) / float(s.max_iter), s.power)
        else:
            rate = s.base_lr * (1.0 / (1.0 + math.exp(-s.gamma * (float(it) - s.stepsize))))
        rates.append(rate)
    return rates


SOLVERS = {
    "fixed": 'base_lr: 0.01 lr_policy: "fixed"',
    "step": 'base_lr: 0.01 lr_policy: "step" gamma: 0.1 stepsize: 7',
    "exp": 'base_lr: 0.1 lr_policy: "exp" gamma: 0.97',
    "inv": 'base_lr: 0.01 lr_policy: "inv" gamma: 0.0001 power: 0.75',
    "multistep": 'base_lr: 0.1 lr_policy: "multistep" gamma: 0.5 stepvalue: 5 stepvalue: 12\n'
                 'stepvalue: 13 stepvalue: 30',
    "poly": 'base_lr: 0.02 lr_policy: "poly" power: 0.9 max_iter: 40',
    "sigmoid": 'base_lr: 0.05 lr_policy: "sigmoid" gamma: -0.2 stepsize: 20',
}


@pytest.mark.parametrize("policy", sorted(SOLVERS))
def test_schedule_matches_caffe_step_by_step(tmp_path: Path, policy: str) -> None:
    path = tmp_path / "solver.prototxt"
    path.write_text(SOLVERS[policy] + "\nmax_iter: 40\n" * (policy != "poly"))
    s = rc.read_solver(path)
    assert s.lr_policy == policy
    ours = [s.learning_rate(t) for t in range(40)]
    assert ours == pytest.approx(caffe_rates(s, 40), rel=1e-12)
    if policy != "fixed":
        assert len(set(ours)) > 1


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=6), st.floats(0.1, 0.9))
def test_multistep_is_caffes_running_counter(steps: list, gamma: float) -> None:
    s = rc.CaffeSolver(base_lr=1.0, lr_policy="multistep", gamma=gamma,
                       stepvalue=tuple(sorted(steps)))
    assert [s.learning_rate(t) for t in range(70)] == pytest.approx(caffe_rates(s, 70))


def test_full_solver_file(tmp_path: Path) -> None:
    path = tmp_path / "solver.prototxt"
    path.write_text('# CaffeNet-style\nnet: "models/train_val.prototxt"\ntest_iter: 1000\n'
                    'test_interval: 1000\nbase_lr: 0.01\nlr_policy: "step"\ngamma: 0.1\n'
                    'stepsize: 100000\ndisplay: 20\nmax_iter: 450000\nmomentum: 0.9\n'
                    'weight_decay: 0.0005\nsnapshot: 10000\nsolver_mode: GPU\n'
                    'solver_type: NESTEROV\niter_size: 2\n')
    s = rc.read_solver(path)
    assert (s.base_lr, s.gamma, s.stepsize, s.max_iter) == (0.01, 0.1, 100000, 450000)
    assert (s.momentum, s.weight_decay, s.iter_size) == (0.9, 0.0005, 2)
    assert s.net == "models/train_val.prototxt" and s.type == "NESTEROV"
    assert s.other["test_iter"] == 1000 and s.other["solver_mode"] == "GPU"


@pytest.mark.parametrize("text,match", [
    ('base_lr: 0.1 lr_policy: "cosine"', "lr_policy 'cosine' is not one of"),
    ('base_lr: 0.1 lr_policy: "step" gamma: 0.1', "needs base_lr, stepsize"),
    ('lr_policy: "fixed"', "needs base_lr"),
    ('base_lr: 0.1 lr_policy: "multistep" gamma: 0.1 stepvalue: 9 stepvalue: 3',
     r"stepvalue \[9, 3\] must increase"),
    ('base_lr: "fast"', "base_lr='fast' is not a float"),
])
def test_bad_solvers(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "solver.prototxt"
    path.write_text(text)
    with pytest.raises(ModelFormatError, match=match):
        rc.read_solver(path)


def test_lr_mults_v2_and_v1(tmp_path: Path) -> None:
    v2 = tmp_path / "train_val.prototxt"
    v2.write_text(
        'layer { name: "data" type: "Data" top: "data" top: "label" }\n'
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"\n'
        '  param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }\n'
        '  convolution_param { num_output: 4 kernel_size: 3 } }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"\n'
        '  param { lr_mult: 10 } param { lr_mult: 20 decay_mult: 0 }\n'
        '  inner_product_param { num_output: 2 } }\n'
        'layer { name: "relu" type: "ReLU" bottom: "fc" top: "fc" }\n')
    assert rc.read_lr_mults(v2) == {"conv1": ((0.0, 0.0), (0.0, 0.0)),
                                    "fc": ((10.0, 1.0), (20.0, 0.0))}
    v1 = tmp_path / "v1.prototxt"
    v1.write_text('input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n'
                  'layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"\n'
                  '  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0\n'
                  '  convolution_param { num_output: 2 kernel_size: 3 } }\n')
    assert rc.read_lr_mults(v1) == {"conv": ((1.0, 1.0), (2.0, 0.0))}


def test_poly_beyond_max_iter_is_an_error() -> None:
    s = rc.CaffeSolver(base_lr=0.1, lr_policy="poly", power=0.5, max_iter=10)
    assert s.learning_rate(10) == 0.0
    with pytest.raises(ValueError, match="iteration 11 is outside the poly schedule"):
        s.learning_rate(11)
