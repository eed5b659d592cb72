"""Bodies of the chaos routes (a run's state is the workflow's own ChaosView)."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ChaosCreate(BaseModel):
    """An experiment from the catalogue by name, or one given whole (the catalogue YAML's shape)."""

    model_config = ConfigDict(extra="forbid")

    experiment: str | None = Field(default=None, description="A catalogue experiment's name.")
    definition: dict[str, Any] | None = Field(default=None, description="An experiment, as in the YAML.")
    run: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=40,
        description="This run's id (default: the UTC time, e.g. 20261126-150600).",
    )

    @model_validator(mode="after")
    def _one_experiment(self) -> "ChaosCreate":
        if (self.experiment is None) == (self.definition is None):
            raise ValueError("give experiment (a catalogue name) or definition (an experiment), one of them")
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


class ScheduleCreate(BaseModel):
    """A recurring game day: an experiment (by name or whole) on a cron or every so many seconds."""

    model_config = ConfigDict(extra="forbid")

    experiment: str | None = None
    definition: dict[str, Any] | None = None
    cron: str | None = Field(default=None, description='A cron expression, e.g. "0 14 * * WED" (UTC).')
    every_s: float | None = Field(default=None, ge=60, description="Or an interval, at least a minute.")
    paused: bool = False

    @model_validator(mode="after")
    def _one_each(self) -> "ScheduleCreate":
        if (self.experiment is None) == (self.definition is None):
            raise ValueError("give experiment (a catalogue name) or definition (an experiment), one of them")
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("give cron or every_s, one of them")
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
