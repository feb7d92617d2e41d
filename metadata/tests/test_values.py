"""Typed values: what people type is read as typed where possible; what does not fit is flagged."""

from __future__ import annotations

from decimal import Decimal

import pytest

from metadata.models import Property, PropertyType
from metadata.services.values import normalize_value, validation_message


def prop(kind, **extra) -> Property:
    return Property(key="p", label="P", type=kind, **extra)


@pytest.mark.parametrize(
    ("kind", "typed", "stored", "message"),
    [
        (PropertyType.TEXT, "  lung ", "lung", None),
        (PropertyType.TEXT, "", None, None),
        (PropertyType.INTEGER, "42", 42, None),
        (PropertyType.INTEGER, "42.0", 42, None),
        (PropertyType.INTEGER, "4.2", "4.2", "Not a whole number."),
        (PropertyType.DECIMAL, "1,5", 1.5, None),
        (PropertyType.DECIMAL, "abc", "abc", "Not a number."),
        (PropertyType.BOOLEAN, "Yes", True, None),
        (PropertyType.BOOLEAN, "maybe", "maybe", "Not yes or no."),
        (PropertyType.DATE, "24.12.2025", "2025-12-24", None),
        (PropertyType.DATE, "2025-02-30", "2025-02-30", "Not a date (YYYY-MM-DD)."),
        (PropertyType.DATE, " 2025-12-24 ", "2025-12-24", None),
        (PropertyType.DATE, "2025-1-5", "2025-01-05", None),
        (PropertyType.DATE, "2025/12/24", "2025-12-24", None),
        (PropertyType.DATE, "20251224", "20251224", "Not a date (YYYY-MM-DD)."),
        (PropertyType.SLIDE, "17", 17, None),
        (PropertyType.SLIDE, "slide-17", "slide-17", "Not the id of a slide."),
        (PropertyType.SLIDE, "²", "²", "Not the id of a slide."),  # a digit, but not a number
    ],
)
def test_normalize_and_validate(kind, typed, stored, message):
    field = prop(kind)
    value = normalize_value(field, typed)
    assert value == stored and type(value) is type(stored)
    assert validation_message(field, value) == message


def test_ranges_options_and_patterns():
    age = prop(PropertyType.INTEGER, min_value=Decimal(0), max_value=Decimal(130))
    assert validation_message(age, 131) == "Larger than 130."
    assert validation_message(age, -1) == "Smaller than 0."
    species = prop(PropertyType.CHOICE, options=[{"value": "Homo sapiens"}])
    assert (
        validation_message(species, "homo sapiens") == "Not one of the options; did you mean 'Homo sapiens'?"
    )
    assert validation_message(species, "Homo sapiens") is None
    block = prop(PropertyType.TEXT, regex=r"[A-Z]\d+")
    assert validation_message(block, "A12") is None
    assert validation_message(block, "12A") == r"Does not match the pattern [A-Z]\d+."
