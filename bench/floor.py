"""The benchmark floor: a minimal workflow whose update runs one no-op activity (SDK alone)."""

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench.noop")
async def noop(text: str) -> str:
    return text


@workflow.defn(name="BenchFloor")
class BenchFloorWorkflow:
    def __init__(self) -> None:
        self._done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._done)

    @workflow.update
    async def turn(self, text: str) -> str:
        result: str = await workflow.execute_activity(
            noop, text, start_to_close_timeout=timedelta(seconds=30)
        )
        return result

    @workflow.signal
    def finish(self) -> None:
        self._done = True


@workflow.defn(name="BenchTokenSink")
class BenchTokenSinkWorkflow:
    """The design lcp did not take, measured by `lcp bench stream`: a turn's tokens reaching the
    workflow as one signal per batch."""

    def __init__(self) -> None:
        self._received = 0
        self._done = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self._done)
        return self._received

    @workflow.signal
    def tokens(self, text: str) -> None:
        self._received += len(text)

    @workflow.signal
    def finish(self) -> None:
        self._done = True
