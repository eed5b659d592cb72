"""The tool-call activity: checks a model's tool call against the tool's schema, then runs it (an HTTP
endpoint, or a built-in clock or calculator) and says what came of it."""

import ast
import asyncio
import json
import logging
import math
import operator
import re
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import jsonschema
import regex
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.contracts import tools as contract
from activities.contracts.tools import ToolCallInput, ToolCallResult
from activities.egress import AddressNotAllowed
from policies.assistants import ToolSpec, parameters_problem
from policies.errors import PermanentError, TransientError

__all__ = ["ToolActivities", "ToolCallInput", "ToolCallResult", "ToolFailure", "calculate", "host_allowed"]

log = logging.getLogger(__name__)

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # the others send the arguments as query parameters
ERROR_BODY_CHARS = 500  # how much of a refusal's body the model sees
HEARTBEAT_EVERY_S = 1.0
MAX_EXPRESSION_CHARS = 1000
MAX_RESULT_BITS = 10_000  # a calculator result bigger than this (about 3000 digits) is refused
# References one check of a call's arguments may follow: a few refs that each branch (anyOf of two refs to
# the next) would otherwise take exponential time, however small the schema.
MAX_REFERENCES_FOLLOWED = 2_000
# Time all of a schema's patterns get to check one call's arguments: `re` backtracks exponentially on some
# (`^(a|aa)+$` against 40 a's and a !), so they run under the regex module, which can stop.
MAX_PATTERN_S = 0.5
# A secret lives at <secrets dir>/<tenant>/<name>: the tenant must be a plain folder name.
TENANT_FOLDER = re.compile(r"(?!\.{1,2}\Z)[A-Za-z0-9_.@-]{1,128}")


class ToolFailure(ApplicationError, TransientError):
    """A call whose outcome is unknown or that may work later (5xx, timeout, no connection): raised, so
    an idempotent tool is retried."""

    def __init__(self, message: str, *, type: str) -> None:
        super().__init__(message, type=type)


class _Refused(PermanentError):
    """A call that failed for good; it becomes an error result for the model."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _error(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)


class ToolActivities(contract.ToolActivities):
    """`http` must be a fenced client (activities.egress.fenced_client): tools are URLs a tenant chose."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        secrets_dir: Path,
        max_result_chars: int = 16_000,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self._http = http
        self._secrets_dir = secrets_dir
        self._max_result_chars = max_result_chars
        self._allowed_hosts = [host.lower() for host in allowed_hosts]

    @activity.defn(name="tools.call")
    async def call(self, request: ToolCallInput) -> ToolCallResult:
        """Run one tool call. A call that cannot work (bad arguments, a refusal, a missing secret) is an
        error result for the model; one that might work later raises ToolFailure."""
        started = time.perf_counter()
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            arguments = parse_arguments(request.tool, request.arguments)
            if request.tool.kind == "builtin":
                content = self._truncated(run_builtin(request.tool.builtin, arguments))
            else:
                content = await self._http_call(request, arguments)  # cut as it is read
            result = ToolCallResult(ok=True, content=content)
        except _Refused as refused:
            result = ToolCallResult(ok=False, content=_error(str(refused)), error_type=refused.error_type)
        finally:
            heartbeat.cancel()
        result.duration_ms = (time.perf_counter() - started) * 1000
        return result

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_S)
            activity.heartbeat()

    def _truncated(self, content: str, read_whole: bool = True) -> str:
        limit = self._max_result_chars
        if read_whole and len(content) <= limit:
            return content
        if read_whole:
            return f"{content[:limit]}\n[truncated: the result had {len(content)} characters]"
        return f"{content[:limit]}\n[truncated: the answer was longer than this; the rest was not read]"

    async def _http_call(self, request: ToolCallInput, arguments: dict[str, Any]) -> str:
        tool = request.tool
        host = (urlsplit(tool.url).hostname or "").lower()
        if not host_allowed(host, self._allowed_hosts):
            raise _Refused(
                "ToolNotAllowed",
                f"tool {tool.name!r} calls {host or tool.url!r}, which is not among the hosts tools may call "
                "(LCP_TOOLS__ALLOWED_HOSTS); the tool was not called",
            )
        # Uncompressed, please: an answer is read only up to a limit, and a small gzip can hold gigabytes.
        headers = {"Idempotency-Key": request.idempotency_key, "Accept-Encoding": "identity"}
        if tool.auth_secret:
            headers["Authorization"] = self._secret(tool, request.tenant)
        method = tool.method.upper()
        payload: dict[str, Any] = (
            {"json": arguments} if method in BODY_METHODS else {"params": _query_params(arguments)}
        )
        try:
            async with (
                asyncio.timeout(tool.timeout_s),  # the whole call, not each read
                self._http.stream(
                    method, tool.url, headers=headers, timeout=tool.timeout_s, **payload
                ) as response,
            ):
                text, whole = await _read_text(response, self._max_result_bytes())
        except AddressNotAllowed as err:
            raise _Refused(
                "AddressNotAllowed", f"tool {tool.name!r} was not called: {err}; ask the operator to open it"
            ) from err
        except httpx.InvalidURL as err:  # a tool saved before its URL was checked as this client parses it
            raise _Refused(
                "InvalidUrl", f"tool {tool.name!r} was not called: its url is invalid ({err})"
            ) from err
        except (TimeoutError, httpx.TimeoutException) as err:
            raise ToolFailure(
                f"tool {tool.name!r} did not answer within {tool.timeout_s:g} s", type="ToolTimeout"
            ) from err
        except httpx.TransportError as err:
            raise ToolFailure(f"tool {tool.name!r} is unreachable: {err!r}", type="ToolUnavailable") from err
        return self._truncated(_answer(tool, response.status_code, text), whole)

    def _max_result_bytes(self) -> int:
        """How much of a tool's answer is read: enough for max_result_chars characters of UTF-8 (and for an
        error's excerpt); the rest is never read, so an endless or huge answer cannot fill the worker."""
        return 4 * max(self._max_result_chars, ERROR_BODY_CHARS)

    def _secret(self, tool: ToolSpec, tenant: str) -> str:
        """The Authorization header's value: the contents, stripped, of the tenant's own secret file
        <secrets dir>/<tenant>/<name>. The file may be a symlink (as Kubernetes mounts secrets); neither
        the tenant nor the name may lead out of the tenant's folder."""
        name = tool.auth_secret
        path = self._secrets_dir / tenant / name
        try:
            if not TENANT_FOLDER.fullmatch(tenant):
                raise FileNotFoundError(f"tenant {tenant!r} cannot name a secrets folder")
            if name in (".", "..") or "/" in name or "\\" in name:
                raise FileNotFoundError(path)
            return path.read_text().strip()
        except OSError as err:
            log.warning("tool %s: secret %r not readable at %s: %r", tool.name, tool.auth_secret, path, err)
            raise _Refused(
                "MissingSecret",
                f"tool {tool.name!r} needs the secret {tool.auth_secret!r}, which is not configured for "
                "this tenant; the tool was not called",
            ) from err


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether `host` is one of `allowed` (exact names, or `*.example.com` for any subdomain); an empty
    list allows every host."""
    if not allowed:
        return True
    return any(
        host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern for pattern in allowed
    )


def parse_arguments(tool: ToolSpec, text: str) -> dict[str, Any]:
    """The call's arguments as a JSON object that fits the tool's parameters schema (Draft 2020-12
    unless the schema names its own `$schema`); else _Refused saying what is wrong and where. Only
    references within the schema resolve: nothing is ever fetched, and the check's work is bounded."""
    try:
        arguments = json.loads(text) if text.strip() else {}
    except ValueError as err:
        raise _Refused("InvalidArguments", f"invalid arguments: not JSON ({err})") from err
    except RecursionError as err:
        raise _Refused("InvalidArguments", "invalid arguments: nested too deeply to read") from err
    if not isinstance(arguments, dict):
        kind = type(arguments).__name__
        raise _Refused("InvalidArguments", f"invalid arguments: expected a JSON object, not {kind}")
    schema = tool.parameters
    if reason := parameters_problem(schema):  # a version stored before the API checked this
        raise _Refused("InvalidToolSchema", f"tool {tool.name!r} has an invalid parameters schema: {reason}")
    validator_class = _bounded(
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    )
    try:
        with _check_budget():
            validator_class.check_schema(schema)
            validator = validator_class(schema, registry=LOCAL_ONLY)
            try:
                problem = best_match(validator.iter_errors(arguments))
            except (ArithmeticError, ValueError, TypeError) as err:  # a reference loop is the schema's
                # The arguments, not the schema: a 4,000-digit integer against multipleOf 0.1 overflows.
                raise _Refused(
                    "InvalidArguments",
                    f"invalid arguments: they cannot be checked against the schema ({err!r})",
                ) from err
    except (SchemaError, Unresolvable, SchemaTooCostly, RecursionError) as err:
        reason = getattr(err, "message", None) or str(err)
        if isinstance(err, RecursionError):
            reason = "its references lead back to themselves without end"
        message = f"tool {tool.name!r} has an invalid parameters schema: {reason}"
        raise _Refused("InvalidToolSchema", message) from err
    if problem is not None:
        raise _Refused("InvalidArguments", f"invalid arguments: {problem.message} (at {problem.json_path})")
    return arguments


def bounded_error(schema: dict[str, Any], instance: Any) -> ValidationError | None:
    """The best-matching error of `instance` against a well-formed `schema` (Draft 2020-12 unless it names
    its own `$schema`; local references only), or None. Raises SchemaTooCostly when checking it would
    follow more than MAX_REFERENCES_FOLLOWED references or match patterns for longer than MAX_PATTERN_S
    (a `oneOf` of references nested a few deep checks every option at every level)."""
    validator_class = _bounded(
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    )
    with _check_budget():
        found: ValidationError | None = best_match(
            validator_class(schema, registry=LOCAL_ONLY).iter_errors(instance)
        )
        return found


def _refuse_retrieval(uri: str) -> Resource:
    """A tool's schema is a tenant's: a reference outside it is never fetched (it could point anywhere)."""
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


LOCAL_ONLY: Registry = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]


class SchemaTooCostly(PermanentError):
    """The schema cannot check these arguments within bounds: too many references followed, patterns
    that take too long, or a pattern the regex module cannot read."""


_references_left: ContextVar[int] = ContextVar("references_left", default=0)
_patterns_until: ContextVar[float] = ContextVar("patterns_until", default=0.0)


@contextmanager
def _check_budget() -> Iterator[None]:
    """Lets the checks inside it follow MAX_REFERENCES_FOLLOWED references and match patterns for
    MAX_PATTERN_S seconds."""
    references = _references_left.set(MAX_REFERENCES_FOLLOWED)
    patterns = _patterns_until.set(time.monotonic() + MAX_PATTERN_S)
    try:
        yield
    finally:
        _references_left.reset(references)
        _patterns_until.reset(patterns)


def _counted(follow: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    def counted(validator: Any, ref: Any, instance: Any, schema: Any) -> Iterator[Any]:
        left = _references_left.get()
        if left <= 0:
            raise SchemaTooCostly(
                f"checking arguments against it follows more than {MAX_REFERENCES_FOLLOWED} references"
            )
        _references_left.set(left - 1)
        yield from follow(validator, ref, instance, schema)

    return counted


def _matches(pattern: str, text: str) -> bool:
    """What re.search(pattern, text) would say, within what is left of the pattern time."""
    try:
        left = _patterns_until.get() - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return regex.search(pattern, text, timeout=left) is not None
    except TimeoutError as err:
        raise SchemaTooCostly(
            f"its patterns take longer than {MAX_PATTERN_S:g} s to check the arguments"
        ) from err
    except regex.error as err:
        raise SchemaTooCostly(f"pattern {pattern!r} cannot be used: {err}") from err


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _matches(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for name, value in instance.items():
            if _matches(pattern, name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional_properties(original: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """additionalProperties, with the names that patternProperties match found by _matches."""

    def additional_properties(validator: Any, additional: Any, instance: Any, schema: Any) -> Iterator[Any]:
        patterns = schema.get("patternProperties")
        if not patterns or not validator.is_type(instance, "object"):
            yield from original(validator, additional, instance, schema)
            return
        declared = schema.get("properties", {})
        extras = sorted(
            name for name in instance if name not in declared and not any(_matches(p, name) for p in patterns)
        )
        if validator.is_type(additional, "object"):
            for name in extras:
                yield from validator.descend(instance[name], additional, path=name)
        elif not additional and extras:
            verb = "does" if len(extras) == 1 else "do"
            listed, regexes = ", ".join(map(repr, extras)), ", ".join(map(repr, sorted(patterns)))
            yield ValidationError(f"{listed} {verb} not match any of the regexes: {regexes}")

    return additional_properties


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """uniqueItems in one pass: jsonschema compares objects pairwise, so 4,000 distinct objects (50 KB of
    arguments) took 26 s on the worker's event loop. Items are compared by a canonical form with JSON
    Schema's equality (1 and 1.0 are equal, true and 1 are not, key order does not count)."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"the array has non-unique elements (first repeated: {_shown(item)})")
            return
        seen.add(key)


def _canonical(value: Any) -> Any:
    """A hashable form of a JSON value that is equal exactly where JSON Schema's equality says so."""
    if isinstance(value, bool) or value is None:
        return ("const", value)
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return ("number", int(value))
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list | tuple):
        return ("array", tuple(_canonical(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, _canonical(item)) for key, item in value.items()))
    return ("other", repr(value))


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 200 else text[:200] + "…"


_BOUNDED: dict[type, type] = {}


def _bounded(validator_class: Any) -> Any:
    """`validator_class`, its reference keywords counted against the budget and its patterns matched
    within the pattern time."""
    if validator_class not in _BOUNDED:
        originals = validator_class.VALIDATORS
        keywords = {
            keyword: _counted(originals[keyword])
            for keyword in ("$ref", "$dynamicRef", "$recursiveRef")
            if keyword in originals
        }
        keywords |= {
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "uniqueItems": _unique_items,
        }
        keywords["additionalProperties"] = _additional_properties(originals["additionalProperties"])
        _BOUNDED[validator_class] = jsonschema.validators.extend(validator_class, keywords)
    return _BOUNDED[validator_class]


def _query_params(arguments: dict[str, Any]) -> dict[str, str]:
    """Arguments as query parameters: strings as they are, anything else as JSON (true, 3, [1,2])."""
    return {
        name: value if isinstance(value, str) else json.dumps(value)
        for name, value in arguments.items()
        if value is not None
    }


async def _read_text(response: httpx.Response, limit: int) -> tuple[str, bool]:
    """The answer's body as text, reading (and inflating) at most `limit` bytes, and whether that was all of
    it. The tool's server chooses how much it sends, and one worker serves every tenant: never read it all."""
    body = bytearray()
    over = False
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > limit:
            over = True
            break
    if response.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
        # Compressed: decompress no more than the limit either (a small gzip can hold gigabytes).
        decoder = zlib.decompressobj(wbits=47)  # gzip or zlib
        try:
            raw = decoder.decompress(bytes(body), limit + 1)
        except zlib.error:
            raw = bytes(body)
        over = over or len(raw) > limit or bool(decoder.unconsumed_tail)
        body = bytearray(raw)
    return bytes(body[:limit]).decode(response.encoding or "utf-8", errors="replace"), not over


def _answer(tool: ToolSpec, status: int, text: str) -> str:
    """A 2xx answer's text; other answers fail: 5xx might work later, anything else will not."""
    if 200 <= status < 300:
        return text
    excerpt = text[:ERROR_BODY_CHARS]
    if status >= 500:
        raise ToolFailure(f"tool {tool.name!r} answered HTTP {status}: {excerpt}", type="ToolError")
    raise _Refused("ToolRejected", f"tool {tool.name!r} answered HTTP {status}: {excerpt}")


# ---- built-in tools --------------------------------------------------------------------------------


def run_builtin(name: str, arguments: dict[str, Any]) -> str:
    if name == "clock":
        return _clock(arguments)
    if name == "calculator":
        return _calculator(arguments)
    raise _Refused("UnknownTool", f"there is no built-in tool {name!r}")


def _clock(arguments: dict[str, Any]) -> str:
    """The current time, in UTC or in the IANA time zone the `timezone` argument names."""
    zone_name = arguments.get("timezone") or "UTC"
    if not isinstance(zone_name, str):
        raise _Refused("InvalidArguments", "invalid arguments: timezone must be a string (at $.timezone)")
    try:
        zone = UTC if zone_name == "UTC" else ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as err:
        raise _Refused(
            "InvalidArguments",
            f"invalid arguments: unknown timezone {zone_name!r}; use an IANA name such as Europe/Berlin",
        ) from err
    now = datetime.now(UTC).astimezone(zone)
    return json.dumps({"time": now.isoformat(timespec="seconds"), "timezone": zone_name})


def _calculator(arguments: dict[str, Any]) -> str:
    expression = arguments.get("expression")
    if not isinstance(expression, str):
        raise _Refused("InvalidArguments", "invalid arguments: expression must be a string (at $.expression)")
    try:
        value = calculate(expression)
    except ValueError as err:
        raise _Refused("InvalidExpression", f"cannot calculate {expression!r}: {err}") from err
    return json.dumps({"expression": expression, "result": value})


Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def calculate(expression: str) -> Number:
    """Arithmetic on numbers: + - * / // % **, unary + and -, parentheses; ValueError for anything else,
    and for results too big (or not real) to give."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, RecursionError) as err:
        raise ValueError("not an arithmetic expression") from err
    try:
        value = _evaluate(tree.body)
    except RecursionError as err:  # "-" * 998 + "1" parses, and nests 998 deep
        raise ValueError("the expression nests too deeply") from err
    except ZeroDivisionError as err:
        raise ValueError("division by zero") from err
    except OverflowError as err:
        raise ValueError("the result is too big") from err
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("the result is too big")
    return value


def _evaluate(node: ast.expr) -> Number:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))  # type: ignore[no-any-return]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        value = _BINARY[type(node.op)](left, right)
        if isinstance(value, complex):
            raise ValueError("the result is not a real number")
        if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
            raise ValueError("the result is too big")
        return value  # type: ignore[no-any-return]
    raise ValueError("only numbers, + - * / // % **, and parentheses are allowed")


def _check_power(base: Number, exponent: Number) -> None:
    """Refuse a power whose result would be too big to compute quickly (ints grow without bound)."""
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        if (abs(base).bit_length() - 1) * exponent > MAX_RESULT_BITS:
            raise ValueError("the result is too big")
