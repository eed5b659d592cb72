"""What the scaling workflow shares with the forecasting activity (activities/forecasting.py): its
input, result and name, without numpy or scikit-learn."""

from dataclasses import dataclass, field

from temporalio import activity


@dataclass
class ForecastInput:
    """One forecast of one service's request rate. Times in seconds."""

    key: str  # the cached model's key, e.g. "scaling/lab/chat-api"
    query: str  # PromQL answering one series of requests/s
    step_s: float = 60.0
    lookback_s: float = 14 * 86400.0
    horizon_s: float = 1800.0
    lead_s: float = 180.0  # the need is planned on the peak over this long (start-up + one interval)
    season_s: list[float] = field(default_factory=lambda: [86400.0, 604800.0])
    refresh_s: float = 3600.0  # retrain when the cached model is older than this
    max_age_s: float = 300.0  # a newest point older than this is stale
    planning_quantile: float = 0.8


@dataclass
class ForecastResult:
    """status: ok | prometheus-down | no-data | stale | nan | bad-query | short-history."""

    status: str
    detail: str  # one sentence saying what happened
    observed_rps: float | None = None  # the newest point (also set on short-history)
    observed_at: float | None = None
    peak_rps: float | None = None
    confidence: float = 0.0
    forecast: list[float] = field(default_factory=list)  # mean requests/s per step after observed_at
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    step_s: float = 60.0  # of the three lists above
    provenance: dict[str, object] | None = None
    trained: bool = False  # this call (re)trained the model


class ForecastingActivities:
    """The activities' contract: what workflows call. The implementation, activities/forecasting.py's
    ForecastingActivities, subclasses this and overrides every method under the same activity name."""

    @activity.defn(name="forecasting.forecast")
    def forecast(self, request: ForecastInput) -> ForecastResult:
        """The peak demand to plan on over the lead time, and the forecast over the horizon. Data problems
        come back as a status (the workflow then takes no forecast-driven action); they never raise.
        A forecast too large for the worker's memory is refused before anything is read: a non-retryable
        ApplicationError of type ForecastTooLarge (its retry would be refused the same)."""
        raise NotImplementedError
