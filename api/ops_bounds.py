"""Numeric fields of the ops request bodies, from the policies' ranges: `Annotated[float, InRange(R)]` is
strict (a bool or a string is not a number), finite, and refused with a 422 that names the field and its
allowed range; the OpenAPI schema shows the range."""

from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

from policies.ranges import Range


@dataclass(frozen=True)
class InRange:
    """Metadata for a float (a JSON integer is taken as one) or, with a `whole` range, an int (1.0, true
    and "1" are refused)."""

    allowed: Range

    def _check(self, value: object) -> float:
        if not self.allowed.holds(value):
            raise PydanticCustomError(
                "out_of_range",
                "must be {allowed}, got {value}",
                {"allowed": self.allowed.describe(), "value": repr(value)[:40]},
            )
        assert isinstance(value, int | float)
        return value if self.allowed.whole else float(value)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # One check for everything (type, finiteness, range), so that every refusal states the range.
        shown = core_schema.int_schema() if self.allowed.whole else core_schema.float_schema()
        return core_schema.no_info_plain_validator_function(self._check, json_schema_input_schema=shown)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        found = dict(handler(schema))
        low, high = self.allowed.low, self.allowed.high
        if self.allowed.whole:
            low, high = int(low), int(high)
        found["exclusiveMinimum" if self.allowed.low_open else "minimum"] = low
        found["exclusiveMaximum" if self.allowed.high_open else "maximum"] = high
        return found
