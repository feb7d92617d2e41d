"""Typed values of properties: read what people type, and say what is wrong with it.

Validation informs, it does not block: `normalize_value` keeps anything it cannot read as typed
(as the text given), and `validation_message` says why such a value is flagged.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation

from metadata.models import Property, PropertyType
from metadata.models.properties import LINK_TYPES

TRUE_WORDS = {"true", "yes", "y", "1", "ja", "x"}
FALSE_WORDS = {"false", "no", "n", "0", "nein"}
MAX_TEXT = 10_000


def normalize_value(prop: Property, value):
    """The value to store for `value` typed into a cell of `prop` (None clears the cell)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            return None
    kind = prop.type
    if kind == PropertyType.INTEGER:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value
        try:
            number = Decimal(str(value))
            if number == number.to_integral_value():
                return int(number)
        except InvalidOperation:
            pass
        return value
    if kind == PropertyType.DECIMAL:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        text = str(value)
        if text.count(",") == 1 and "." not in text:  # a decimal comma: 1,5
            text = text.replace(",", ".")
        try:
            number = Decimal(text)
        except InvalidOperation:
            return value
        return float(number) if number.is_finite() else value
    if kind == PropertyType.BOOLEAN:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        return value
    if kind == PropertyType.DATE:
        parsed = parse_date(str(value))
        return parsed.isoformat() if parsed else value
    if kind in LINK_TYPES:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value)
        return int(text) if text.isascii() and text.isdigit() else text
    if kind == PropertyType.CHOICE:
        text = str(value)
        for option in prop.options or []:
            if str(option.get("value")) == text:
                return option["value"]
        return text
    return value if isinstance(value, str) else str(value)


ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def parse_date(text: str) -> dt.date | None:
    text = text.strip()
    if ISO_DATE.fullmatch(text):  # the usual form, ten times faster than strptime
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            return None
    for pattern in ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%Y/%m/%d"):
        try:
            return dt.datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    return None


def validation_message(prop: Property, value) -> str | None:
    """Why `value` (as stored) does not fit `prop`, or None when it does."""
    if value is None:
        return None
    kind = prop.type
    if kind == PropertyType.INTEGER and (isinstance(value, bool) or not isinstance(value, int)):
        return "Not a whole number."
    if kind == PropertyType.DECIMAL and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return "Not a number."
    if kind == PropertyType.BOOLEAN and not isinstance(value, bool):
        return "Not yes or no."
    if kind == PropertyType.DATE and (
        not isinstance(value, str) or parse_date(value) is None or parse_date(value).isoformat() != value
    ):
        return "Not a date (YYYY-MM-DD)."
    if kind in LINK_TYPES and (isinstance(value, bool) or not isinstance(value, int)):
        return (
            f"Not the id of a {PropertyType(kind).label.removeprefix('Link to a ').removeprefix('Link to ')}."
        )
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return f"Longer than {MAX_TEXT} characters."
    if kind in (PropertyType.INTEGER, PropertyType.DECIMAL):
        if prop.min_value is not None and Decimal(str(value)) < prop.min_value:
            return f"Smaller than {_plain(prop.min_value)}."
        if prop.max_value is not None and Decimal(str(value)) > prop.max_value:
            return f"Larger than {_plain(prop.max_value)}."
    options = [str(o.get("value")) for o in prop.options or []]
    if (kind == PropertyType.CHOICE or prop.options_only) and options and str(value) not in options:
        close = [o for o in options if o.lower() == str(value).lower()]
        if close:
            return f"Not one of the options; did you mean {close[0]!r}?"
        return "Not one of the options."
    if prop.regex and isinstance(value, str):
        try:
            if not re.fullmatch(prop.regex, value):
                return f"Does not match the pattern {prop.regex}."
        except re.error:
            return None
    return None


def _plain(number: Decimal) -> str:
    """130, 0.5 – not 1.3E+2 or 0.5000000000."""
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def invalid_cells(events) -> list[dict]:
    """The cells of written events whose value does not fit its column, with the reason."""
    return [
        {"entity": e.entity_id, "property": e.property.key, "message": message}
        for e in events
        if (message := validation_message(e.property, e.value))
    ]
