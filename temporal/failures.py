"""lcp's errors as Temporal failures: an activity hands a PermanentError over as a non-retryable
ApplicationError (its retry would fail the same way) and a TransientError as a retryable one."""

from temporalio.exceptions import ApplicationError

from policies.errors import LcpError, PermanentError


def application_error(err: LcpError) -> ApplicationError:
    """`err` as Temporal should see it: its message, its class's name as the type, and non-retryable
    when it is permanent."""
    return ApplicationError(str(err), type=type(err).__name__, non_retryable=isinstance(err, PermanentError))
