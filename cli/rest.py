"""The lcp REST API from the command line: one client, errors said in one line."""

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from rich.console import Console
from rich.text import Text

from cli.show import plain

Client = TypeVar("Client", bound="ApiClient")


class CliError(Exception):
    """What went wrong, said in one line (the API's own message when it answered)."""

    def __init__(self, message: str, status: int | None = None, type_: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.type = message, status, type_


def _api_error(response: httpx.Response) -> CliError:
    try:
        error = response.json()["error"]
        return CliError(str(error["message"]), response.status_code, str(error.get("type") or ""))
    except (ValueError, KeyError, TypeError):
        return CliError(f"HTTP {response.status_code}: {response.text[:200]}", response.status_code)


class ApiClient:
    """JSON calls to the lcp API with a bearer key; any failure is a CliError."""

    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 120.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def connect(cls: type[Client], api_url: str | None, home: Path, api_key: str | None) -> Client:
        """A client of the API at `api_url` with `api_key`, by default those `lcp dev` wrote to dev.json."""
        from cli.chat import dev_info

        dev = dev_info(home)
        return cls(api_url or dev.get("api", "http://127.0.0.1:8000"), api_key or dev.get("api_key", ""))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as err:
            raise CliError(f"the API at {self.base_url} did not answer in time ({err})") from err
        except httpx.TransportError as err:
            raise CliError(
                f"cannot reach the API at {self.base_url} ({err}): is it running (`lcp dev`)? see --api"
            ) from err
        if response.status_code >= 400:
            raise _api_error(response)
        return response.json() if response.content else None


def guarded(group: str, command: str, err_console: Console, run: Callable[[], int]) -> int:
    """Run `lcp GROUP COMMAND`: an error is one red line naming it (exit 1); Ctrl-C while watching
    exits 130 and leaves the work going on."""
    try:
        return run()
    except CliError as err:
        err_console.print(Text(f"lcp {group} {command}: {plain(err.message)}", style="red"), soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print(
            Text(f"lcp {group} {command}: stopped watching; it goes on", style="dim"), soft_wrap=True
        )
        return 130
