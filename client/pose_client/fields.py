"""Strict reading of the service's JSON: each field must be there with its JSON type, or the answer is refused
as malformed (`MalformedAnswer`, which the calls turn into `InvalidResponseError`). No coercion: `"1.5"` is not
a number and `"false"` is not a boolean, so a proxy's or an impostor's page can never pass for a result."""

from __future__ import annotations

from typing import Any


class MalformedAnswer(ValueError):
    """The JSON is not the answer this call expects; the message names the field (`persons[0].box`)."""


def _type_name(value: Any) -> str:
    return "null" if value is None else {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__)


def obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedAnswer(f"{where or 'the answer'}: expected a JSON object, got {_type_name(value)}")
    return value


def field(data: dict[str, Any], name: str, where: str) -> Any:
    if name not in data:
        raise MalformedAnswer(f"{where + '.' if where else ''}{name}: missing")
    return data[name]


def number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedAnswer(f"{where}: expected a number, got {_type_name(value)}")
    return float(value)


def integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedAnswer(f"{where}: expected an integer, got {_type_name(value)}")
    return value


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise MalformedAnswer(f"{where}: expected a boolean, got {_type_name(value)}")
    return value


def string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise MalformedAnswer(f"{where}: expected a string, got {_type_name(value)}")
    return value


def array(value: Any, where: str, length: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedAnswer(f"{where}: expected a list, got {_type_name(value)}")
    if length is not None and len(value) != length:
        raise MalformedAnswer(f"{where}: expected {length} items, got {len(value)}")
    return value
