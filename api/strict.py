"""The base of every request body: unknown fields refused, and no coercion (`true` is not 1, `"5"` not 5,
1.0 not 1), so a typo or a wrong type is a 422 that names the field."""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A request body: unknown fields refused, and no coercion."""

    model_config = ConfigDict(extra="forbid", strict=True)
