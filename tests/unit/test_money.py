"""The amount rule at the edge: whole numbers of minor units in range, whatever JSON spelling they arrive in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments_app.domain.money import MAX_AMOUNT_MINOR, InvalidInput, require_amount

IN_RANGE = st.integers(min_value=1, max_value=MAX_AMOUNT_MINOR)


@given(IN_RANGE)
def test_a_whole_amount_is_taken_exactly_as_an_int_or_as_a_whole_float(amount: int) -> None:
    assert require_amount(amount) == amount and type(require_amount(amount)) is int
    if float(amount) == amount:  # every integer up to 2**53 is a float exactly
        converted = require_amount(float(amount))
        assert converted == amount and type(converted) is int


@given(st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not x.is_integer()))
def test_a_fraction_or_a_non_number_float_is_malformed(value: float) -> None:
    with pytest.raises(InvalidInput) as refused:
        require_amount(value)
    assert refused.value.malformed


@given(st.one_of(st.integers(min_value=-(2**1000), max_value=0), st.integers(MAX_AMOUNT_MINOR + 1, 2**1000)))
def test_an_amount_out_of_range_is_refused_as_a_meaning_error(value: int) -> None:
    for spelling in (value, float(value)):
        with pytest.raises(InvalidInput) as refused:
            require_amount(spelling)
        assert not refused.value.malformed, spelling


@pytest.mark.parametrize("value", [True, False, "10", None, [10], {"minor": 10}])
def test_other_types_are_malformed(value: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        require_amount(value)
    assert refused.value.malformed
