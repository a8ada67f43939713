"""A small synchronous client of the control plane's REST API (used by ``rkdsc demo``)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import httpx

__all__ = ["ControlClient", "ControlError"]


class ControlError(RuntimeError):
    """The control plane answered with an error (or not at all).

    Attributes:
        status: the HTTP status, or ``None`` when there was no answer.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ControlClient:
    """REST calls to ``base_url`` with a bearer token for the mutating ones.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        token: the API token (needed for PUT/POST only).
        timeout: per-request timeout [s].
        http: an httpx client to use (e.g. a FastAPI ``TestClient``); not closed here.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._owned = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            resp = self._http.request(
                method, self.base_url + path, json=body, headers=self._headers
            )
        except httpx.HTTPError as err:
            raise ControlError(f"{method} {self.base_url}{path}: no answer ({err})") from err
        if resp.status_code >= 400:
            raise ControlError(
                f"{method} {path} -> {resp.status_code}: {_detail(resp)}", resp.status_code
            )
        return resp.json()

    def is_ready(self, timeout: float = 2.0) -> bool:
        """Whether ``/readyz`` answers 200 within ``timeout`` seconds."""
        try:
            return self._http.get(self.base_url + "/readyz", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def get_channel(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/v1/channel")
        return result

    def update_channel(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._request("PUT", "/v1/channel", changes)
        return result

    def get_transmitter(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/v1/transmitter")
        return result

    def update_transmitter(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._request("PUT", "/v1/transmitter", changes)
        return result

    def start_run(
        self, *, split: str = "test", num_images: int, rate: float = 0.0
    ) -> dict[str, Any]:
        body = {"split": split, "num_images": num_images, "rate": rate}
        result: dict[str, Any] = self._request("POST", "/v1/runs", body)
        return result

    def get_run(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/runs/{run_id}")
        return result

    def wait_run(self, run_id: str, *, timeout: float, poll_seconds: float = 0.5) -> dict[str, Any]:
        """Poll a run until it is done or failed; :class:`ControlError` after ``timeout`` [s]."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run["done"]:
                return run
            if time.monotonic() >= deadline:
                raise ControlError(
                    f"run {run_id} not finished after {timeout:g} s "
                    f"({run['fates']} of {run['total']} accounted for)"
                )
            time.sleep(poll_seconds)


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        return resp.text[:500]
    if isinstance(detail, list):
        return "; ".join(_named(e) for e in detail if isinstance(e, dict))
    return str(detail)


def _named(error: dict[str, Any]) -> str:
    """``field: message`` of one validation error (a message naming its field is kept)."""
    where = ".".join(str(p) for p in error.get("loc", [])[1:]) or "body"
    msg = str(error.get("msg", error))
    return msg if msg.startswith(f"{where}: ") else f"{where}: {msg}"
