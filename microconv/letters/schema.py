"""Checking what a file holds before any of it is used: small declarative schemas.

A checkpoint header and the rows of a metrics database come from files, and a file can hold
anything: a string where a number belongs, a list where a record belongs, a number too large
to mean anything. Each format describes its fields once with the checkers below; ``check``
walks the value and raises ``Invalid`` naming the first field that does not fit (``progress.
step must be an integer >= 0, not -3``). Callers turn that into their own one-line error.

A checker is a function ``(value, where) -> value``: the value checked (JSON text comes back
parsed, records and lists as checked copies). Booleans are never numbers here, numbers are
finite, and text never holds a line break (it ends up in one-line messages).
"""

from __future__ import annotations

import json
import math


class Invalid(Exception):
    """A value does not fit its schema; the message names the field."""


def _show(value):
    text = " ".join(repr(value).split())
    return text if len(text) <= 40 else text[:37] + "..."


def _fail(where, expected, value):
    raise Invalid(f"{where} must be {expected}, not {_show(value)}")


def _bounds(low, high):
    if low is not None and high is not None:
        return f" in {low}..{high}"
    if low is not None:
        return f" >= {low}"
    return f" <= {high}" if high is not None else ""


def integer(low=None, high=None):
    def checker(value, where):
        if (type(value) is not int or (low is not None and value < low)
                or (high is not None and value > high)):
            _fail(where, "an integer" + _bounds(low, high), value)
        return value
    return checker


def finite(number):
    """Whether an int or float is finite; an int too large for a float is not."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def number(low=None, high=None, above=None, below=None):
    """A finite int or float within [low, high] and, when given, strictly above ``above`` and
    below ``below``."""
    def checker(value, where):
        ok = type(value) in (int, float) and finite(value)
        ok = ok and (low is None or value >= low) and (high is None or value <= high)
        ok = ok and (above is None or value > above) and (below is None or value < below)
        if not ok:
            expected = "a finite number" + _bounds(low, high)
            expected += f" above {above}" if above is not None else ""
            expected += f" below {below}" if below is not None else ""
            _fail(where, expected, value)
        return value
    return checker


def boolean(value, where):
    if type(value) is not bool:
        _fail(where, "true or false", value)
    return value


def text(choices=None, max_length=1000, distinct=False):
    """A one-line string; ``distinct``: no character twice (class names)."""
    def checker(value, where):
        if type(value) is not str or len(value) > max_length or "\n" in value or "\r" in value:
            _fail(where, f"one line of text (at most {max_length} characters)", value)
        if choices is not None and value not in choices:
            _fail(where, "one of " + ", ".join(map(str, choices)), value)
        if distinct and (not value or len(set(value)) != len(value)):
            _fail(where, "distinct characters", value)
        return value
    return checker


def optional(checker):
    def check_optional(value, where):
        return None if value is None else checker(value, where)
    return check_optional


def one_of(*checkers):
    """The first checker that accepts the value; the last one's complaint otherwise."""
    def checker(value, where):
        for candidate in checkers[:-1]:
            try:
                return candidate(value, where)
            except Invalid:
                pass
        return checkers[-1](value, where)
    return checker


def listing(item, min_length=0, max_length=10_000):
    def checker(value, where):
        if type(value) is not list or not min_length <= len(value) <= max_length:
            _fail(where, f"a list of {min_length} to {max_length} items", value)
        return [item(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return checker


def record(fields, required=(), closed=False, max_keys=1000):
    """A JSON object: the named fields are checked when present (``required`` ones must be);
    ``closed`` refuses any other key, otherwise other keys are kept unchecked."""
    def checker(value, where):
        if type(value) is not dict or len(value) > max_keys:
            _fail(where, "a record (a JSON object)", value)
        for key in required:
            if key not in value:
                raise Invalid(f"{where}.{key} is missing")
        checked = {}
        for key, item in value.items():
            if key in fields:
                checked[key] = fields[key](item, f"{where}.{key}")
            elif closed:
                raise Invalid(f"{where} has an unknown field {_show(key)}")
            else:
                checked[key] = item
        return checked
    return checker


def mapping(value_checker, max_keys=1000):
    """A JSON object of any string keys, each value checked by ``value_checker``."""
    def checker(value, where):
        if type(value) is not dict or len(value) > max_keys:
            _fail(where, "a record (a JSON object)", value)
        return {text()(key, f"{where} key"): value_checker(item, f"{where}.{key}")
                for key, item in value.items()}
    return checker


def scalar(value, where):
    """Any JSON value but a list or an object: a setting's value."""
    if value is not None and type(value) not in (bool, int, float, str):
        _fail(where, "a single value", value)
    if type(value) is float and not math.isfinite(value):
        _fail(where, "a finite number", value)
    if type(value) is str:
        text()(value, where)
    return value


def anything(value, where):
    return value


def json_text(checker, max_length=10_000_000):
    """Text holding JSON (a metrics database column), parsed and checked; None stays None."""
    def check_json(value, where):
        if value is None:
            return None
        if type(value) is not str or len(value) > max_length:
            _fail(where, "JSON text", value)
        try:
            parsed = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            _fail(where, "JSON text", value)
        return checker(parsed, where)
    return check_json
