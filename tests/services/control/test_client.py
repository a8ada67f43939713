"""The control plane's HTTP client: errors read as one line per field."""

from __future__ import annotations

import httpx

from services.control.client import _detail


def _response(detail: object) -> httpx.Response:
    return httpx.Response(422, json={"detail": detail})


def test_each_error_names_its_field_once() -> None:
    errors = [
        {"loc": ["body", "fixed_length"], "msg": "fixed_length: must be one of [8, 16]"},
        {"loc": ["body", "snr_db"], "msg": "Input should be less than or equal to 60"},
        {"loc": ["body"], "msg": "a body is required"},
    ]
    assert _detail(_response(errors)) == (
        "fixed_length: must be one of [8, 16]; "
        "snr_db: Input should be less than or equal to 60; body: a body is required"
    )


def test_a_plain_detail_is_kept() -> None:
    assert _detail(_response("no run 'x'")) == "no run 'x'"
