"""Declared bounds on a catalog agent's numeric inputs, checked before a run exists.

Every built-in agent reads a few numbers from its ``input_dict`` (how many
events, how far apart, how large).  Unbounded, any caller could ask for a
billion events in one go; so each agent declares its numbers here, with a
range, and the catalog checks a start's input against them before the run
is created (:meth:`runyard.actors.agents.AgentCatalog.resolve`): a bad input is a
422 naming the field and its limit, never a run that starts and fails.
The agent reads its values back through the same spec, so the defaults and
the bounds are written once.

Keys a spec does not declare are left alone (an agent may take strings, or
pass its input through, like ``echo``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from runyard.actors.errors import InvalidInput

__all__ = ["InputSpec", "Number"]


@dataclass(frozen=True, slots=True)
class Number:
    """One numeric input: ``minimum <= value <= maximum``; ``integer`` refuses fractions.

    ``default`` is used when the key is absent (or ``None``); a ``None``
    default makes the input optional (read as ``None``).
    """

    name: str
    default: float | None
    minimum: float
    maximum: float
    integer: bool = False

    def read(self, input_dict: Mapping[str, object]) -> float | None:
        """The value (an ``int`` for integer inputs); raises :class:`InvalidInput` (422)."""
        value = input_dict.get(self.name)
        if value is None:
            return self.default
        kind = "an integer" if self.integer else "a number"
        where = f"input_dict.{self.name}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"invalid input: {where} must be {kind}, got {_short(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"invalid input: {where} must be a finite number, got {value}")
        if self.integer and isinstance(value, float) and not value.is_integer():
            raise InvalidInput(f"invalid input: {where} must be an integer, got {value}")
        if value > self.maximum:
            raise InvalidInput(f"invalid input: {where} must be <= {_num(self.maximum)}")
        if value < self.minimum:
            raise InvalidInput(f"invalid input: {where} must be >= {_num(self.minimum)}")
        return int(value) if self.integer else float(value)

    def json_schema(self) -> dict[str, object]:
        """This input as a JSON Schema property: type, minimum, maximum, default."""
        schema: dict[str, object] = {
            "type": "integer" if self.integer else "number",
            "minimum": _plain(self.minimum),
            "maximum": _plain(self.maximum),
        }
        if self.default is not None:
            schema["default"] = _plain(self.default)
        return schema

    def describe(self) -> str:
        """``"n: integer 0..1000000, default 10000"``: for the agent's description."""
        kind = "integer" if self.integer else "number"
        default = "optional" if self.default is None else f"default {_num(self.default)}"
        return f"{self.name}: {kind} {_num(self.minimum)}..{_num(self.maximum)}, {default}"


@dataclass(frozen=True, slots=True)
class InputSpec:
    """An agent's declared numeric inputs."""

    numbers: tuple[Number, ...] = ()

    def check(self, input_dict: Mapping[str, object]) -> dict[str, float | None]:
        """Every declared input's value, defaults filled in; raises :class:`InvalidInput`."""
        return {number.name: number.read(input_dict) for number in self.numbers}

    def describe(self) -> str:
        return "; ".join(number.describe() for number in self.numbers)

    def json_schema(self) -> dict[str, object]:
        """The agent's ``input_dict`` as a JSON Schema (Draft 2020-12): its declared
        numbers; other keys are the agent's own business, so they are allowed."""
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {number.name: number.json_schema() for number in self.numbers},
            "additionalProperties": True,
        }


def _plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
