import math

import numpy as np
import pytest

from repurpose._validation import check_choice, check_int, check_number


def test_check_int_accepts_numpy_ints_and_refuses_bools_and_floats():
    assert check_int("n", np.int64(3), 1) == 3
    for bad in (0, True, 2.0, "2", None):
        with pytest.raises(ValueError, match=r"n=.*; expected an integer >= 1"):
            check_int("n", bad, 1)


@pytest.mark.parametrize(
    ("kwargs", "value", "interval"),
    [
        ({"low": 0, "low_open": True}, 0.0, r"\(0, inf\)"),
        ({"low": 0, "high": 1, "low_open": True}, 1.5, r"\(0, 1\]"),
        ({"low": 0, "high": 1}, -0.1, r"\[0, 1\]"),
        ({"low": 0, "high": 1, "high_open": True}, 1.0, r"\[0, 1\)"),
        ({"low": 0}, math.nan, r"\[0, inf\)"),
        ({}, "x", r"\(-inf, inf\)"),
    ],
)
def test_check_number_names_the_interval(kwargs, value, interval):
    with pytest.raises(ValueError, match=rf"lr={value!r}; expected a number in {interval}"):
        check_number("lr", value, **kwargs)


def test_check_number_accepts_values_inside_and_on_closed_bounds():
    assert check_number("p", 1, 0, 1) == 1.0
    assert check_number("p", 0.5, 0, 1, low_open=True, high_open=True) == 0.5


def test_check_choice_lists_the_options():
    assert check_choice("kernel", "rbf", ("rbf", "linear")) == "rbf"
    with pytest.raises(ValueError, match=r"kernel='poly'; expected one of \['linear', 'rbf'\]"):
        check_choice("kernel", "poly", ("rbf", "linear"))
