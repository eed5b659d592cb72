"""Bodies of the chaos routes (a run's state is the workflow's own ChaosView)."""

import re
from typing import Annotated, Any

from pydantic import BaseModel, Field, StrictBool, field_validator, model_validator

from api.ops_bounds import InRange
from api.strict import Strict
from policies.ranges import DAY_S, MINUTE_S, seconds

# A game day comes at most once a minute and at least once a year: every_s in this range, and a cron
# expression of five fields (minute hour day month weekday: no seconds field, no @every) or a macro.
EVERY_RANGE = seconds(MINUTE_S, 366 * DAY_S)
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_CRON_FIELD = re.compile(r"[0-9A-Za-z*?/,#\-]{1,40}")

RunId = Annotated[
    str | None,
    Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=40,
        description="This run's id (default: the UTC time, e.g. 20261126-150600).",
    ),
]


def one_of(name: str | None, definition: dict[str, Any] | None, kind: str, article: str) -> None:
    """A body names its `kind` (experiment or scenario) from the catalogue or gives it whole: one of them."""
    if (name is None) == (definition is None):
        raise ValueError(f"give {kind} (a catalogue name) or definition ({article} {kind}), one of them")


class ChaosCreate(Strict):
    """An experiment from the catalogue by name, or one given whole (the catalogue YAML's shape)."""

    experiment: str | None = Field(default=None, description="A catalogue experiment's name.")
    definition: dict[str, Any] | None = Field(default=None, description="An experiment, as in the YAML.")
    run: RunId = None

    @model_validator(mode="after")
    def _one_experiment(self) -> "ChaosCreate":
        one_of(self.experiment, self.definition, "experiment", "an")
        return self


class Catalogue(BaseModel):
    data: list[dict[str, Any]]


class ChaosSummary(BaseModel):
    id: str
    experiment: str
    run: str
    target: str | None
    phase: str | None
    status: str
    started_at: str | None
    closed_at: str | None


class ChaosList(BaseModel):
    data: list[ChaosSummary]


class GameDayTiming(Strict):
    """When a recurring game day runs: a cron or every so many seconds."""

    cron: str | None = Field(
        default=None,
        max_length=200,
        description='A cron expression of five fields, e.g. "0 14 * * WED" (UTC), or @daily, @hourly, ...',
    )
    every_s: Annotated[float, InRange(EVERY_RANGE)] | None = Field(
        default=None, description="Or an interval, from a minute to a year."
    )
    paused: StrictBool = False

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, cron: str | None) -> str | None:
        if cron is None or cron.strip() in CRON_MACROS:
            return cron
        fields = cron.split()
        if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(field) for field in fields):
            raise ValueError(
                "must be five fields (minute hour day-of-month month day-of-week, e.g. '0 14 * * WED') or "
                f"one of {', '.join(CRON_MACROS)}: runs at most once a minute"
            )
        return cron

    @model_validator(mode="after")
    def _one_timing(self) -> "GameDayTiming":
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("give cron or every_s, one of them")
        return self


class ScheduleCreate(GameDayTiming):
    """A recurring game day: an experiment (by name or whole) on a cron or every so many seconds."""

    experiment: str | None = None
    definition: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_experiment(self) -> "ScheduleCreate":
        one_of(self.experiment, self.definition, "experiment", "an")
        return self


class ScheduleSummary(BaseModel):
    id: str
    experiment: str
    spec: str
    paused: bool
    next_runs: list[str]
    recent_runs: list[str]


class ScheduleList(BaseModel):
    data: list[ScheduleSummary]


# ── Scenarios ─────────────────────────────────────────────────────────────────────────────────────────


class ScenarioCreate(Strict):
    """A scenario from the catalogue by name, or one given whole (the scenarios YAML's shape)."""

    scenario: str | None = Field(default=None, description="A catalogue scenario's name.")
    definition: dict[str, Any] | None = Field(default=None, description="A scenario, as in the YAML.")
    run: RunId = None

    @model_validator(mode="after")
    def _one_scenario(self) -> "ScenarioCreate":
        one_of(self.scenario, self.definition, "scenario", "a")
        return self


class ScenarioScheduleCreate(GameDayTiming):
    """A recurring game day of a scenario (by name or whole)."""

    scenario: str | None = None
    definition: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_scenario(self) -> "ScenarioScheduleCreate":
        one_of(self.scenario, self.definition, "scenario", "a")
        return self


class ScenarioSummary(BaseModel):
    id: str
    scenario: str
    run: str
    phase: str | None
    status: str
    started_at: str | None
    closed_at: str | None


class ScenarioList(BaseModel):
    data: list[ScenarioSummary]
