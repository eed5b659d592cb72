"""What an activity failure says at its bottom: the activity's own error, its message and type."""

from temporalio.exceptions import ApplicationError


def root(err: BaseException) -> BaseException:
    """The error at the bottom of an activity failure (the activity's own)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def cause(err: BaseException) -> str:
    bottom = root(err)
    return str(bottom) or type(bottom).__name__


def cause_type(err: BaseException) -> str:
    """The activity error's type (e.g. TargetNotFound); "Unavailable" for a timeout or a lost worker."""
    bottom = root(err)
    return (bottom.type if isinstance(bottom, ApplicationError) else None) or "Unavailable"
