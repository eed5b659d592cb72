"""lcp's root exception, LcpError, and its two tiers: PermanentError (the same call fails again the same
way) and TransientError (a retry may succeed).

It lives here because policies/ imports the standard library only and every other package may import
policies/ (workflows in Temporal's sandbox included): any module can derive its errors from these without
loading anything heavy. An error that kept a built-in base (ValueError, LookupError, RuntimeError) keeps
it beside its tier, so code that catches the built-in still catches it. An error whose tier depends on
the case (an API answer, a failed inference call) derives from LcpError and says its tier itself (its
HTTP status, its `non_retryable`)."""


class LcpError(Exception):
    """Anything lcp raises on purpose: `except LcpError` tells lcp's own errors from bugs."""


class PermanentError(LcpError):
    """Bad input, or a state that will fail again the same way: retrying is pointless. An activity hands
    it to Temporal as a non-retryable ApplicationError."""


class TransientError(LcpError):
    """A dependency that may answer later (down, overloaded, not ready yet): a retry may help."""
