"""Strict JSON and bounded bodies (T17, T18): every malformed or oversized body is
refused with its own code, changes nothing, and is never echoed back."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from gateway.codec import decode, fields
from gateway.errors import GatewayError
from gateway.limits import MIB, Limits
from tests.gateway.helpers import new_session
from tests.support.server import ServerProcess

CANARY = "CANARY-7f3a"
JSON = {"Content-Type": "application/json"}


def nested(depth: int) -> bytes:
    return (
        b'{"content": "'
        + CANARY.encode()
        + b'", "attachments": '
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )


BAD_BODIES = [
    # (case, body, headers, status, code)
    (
        "invalid utf-8",
        b'{"content": "\xff' + CANARY.encode() + b'"}',
        JSON,
        400,
        "invalid_json",
    ),
    (
        "byte order mark",
        b'\xef\xbb\xbf{"content": "' + CANARY.encode() + b'"}',
        JSON,
        400,
        "invalid_json",
    ),
    (
        "escaped lone surrogate",
        b'{"content": "\\ud800' + CANARY.encode() + b'"}',
        JSON,
        400,
        "invalid_json",
    ),
    (
        "raw surrogate bytes",
        b'{"content": "\xed\xa0\x80' + CANARY.encode() + b'"}',
        JSON,
        400,
        "invalid_json",
    ),
    (
        "NaN",
        b'{"content": "' + CANARY.encode() + b'", "metadata": {"x": NaN}}',
        JSON,
        400,
        "invalid_json",
    ),
    (
        "Infinity",
        b'{"content": "' + CANARY.encode() + b'", "metadata": {"x": Infinity}}',
        JSON,
        400,
        "invalid_json",
    ),
    (
        "float overflow",
        b'{"content": "' + CANARY.encode() + b'", "metadata": {"x": 1e400}}',
        JSON,
        400,
        "invalid_json",
    ),
    (
        "trailing garbage",
        b'{"content": "' + CANARY.encode() + b'"} x',
        JSON,
        400,
        "invalid_json",
    ),
    (
        "two documents",
        b'{"content": "a"}{"content": "' + CANARY.encode() + b'"}',
        JSON,
        400,
        "invalid_json",
    ),
    ("truncated", b'{"content": "' + CANARY.encode(), JSON, 400, "invalid_json"),
    ("empty body", b"", JSON, 400, "invalid_json"),
    ("depth 33", nested(32), JSON, 400, "json_too_deep"),
    ("depth 1024", nested(1023), JSON, 400, "json_too_deep"),
    ("depth 100000", nested(100_000), JSON, 400, "json_too_deep"),
    (
        "integer 2^53",
        b'{"content": "' + CANARY.encode() + b'", "metadata": {"n": 9007199254740992}}',
        JSON,
        400,
        "integer_out_of_range",
    ),
    (
        "integer -2^63",
        b'{"content": "'
        + CANARY.encode()
        + b'", "metadata": {"n": -9223372036854775808}}',
        JSON,
        400,
        "integer_out_of_range",
    ),
    (
        "integer beyond 64 bits",
        b'{"content": "'
        + CANARY.encode()
        + b'", "metadata": {"n": 123456789012345678901234567890}}',
        JSON,
        400,
        "integer_out_of_range",
    ),
    (
        "text/plain",
        b'{"content": "' + CANARY.encode() + b'"}',
        {"Content-Type": "text/plain"},
        415,
        "unsupported_media_type",
    ),
    (
        "form",
        b"content=" + CANARY.encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
    ),
    (
        "latin-1 charset",
        b'{"content": "' + CANARY.encode() + b'"}',
        {"Content-Type": "application/json; charset=latin-1"},
        415,
        "unsupported_media_type",
    ),
    (
        "no content type",
        b'{"content": "' + CANARY.encode() + b'"}',
        {},
        415,
        "unsupported_media_type",
    ),
    ("an array", b'["' + CANARY.encode() + b'"]', JSON, 400, "invalid_request"),
    ("a string", b'"' + CANARY.encode() + b'"', JSON, 400, "invalid_request"),
    (
        "an unknown field",
        b'{"content": "x", "' + CANARY.encode() + b'": 1}',
        JSON,
        400,
        "invalid_request",
    ),
    (
        "metadata over 16 KiB",
        b'{"content": "x", "metadata": {"k": "'
        + b"m" * 20_000
        + CANARY.encode()
        + b'"}}',
        JSON,
        413,
        "metadata_too_large",
    ),
    (
        "body over 1 MiB",
        b'{"content": "' + b"a" * (MIB + 1) + CANARY.encode() + b'"}',
        JSON,
        413,
        "payload_too_large",
    ),
]


@pytest.fixture(scope="module")
def target(server: ServerProcess) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=server.url, timeout=20.0) as http:
        yield http, new_session(http)["id"]


@pytest.mark.parametrize(
    ("case", "body", "headers", "status", "code"),
    BAD_BODIES,
    ids=[case[0] for case in BAD_BODIES],
)
def test_a_bad_body_is_refused_with_its_code_and_changes_nothing(
    target: tuple[httpx.Client, str],
    case: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    http, sid = target
    before = http.get(f"/v1/sessions/{sid}").json()["offset"]
    sessions_before = http.get("/v1/sessions").json()["total"]
    create_body = body.replace(b'"content"', b'"agent_id"')
    for url, sent in (
        (f"/v1/sessions/{sid}/messages", body),
        ("/v1/sessions", create_body),
    ):
        response = http.post(url, content=sent, headers=headers)
        assert response.status_code == status, (case, url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == code
        assert CANARY not in response.text
    assert http.get(f"/v1/sessions/{sid}").json()["offset"] == before
    assert http.get("/v1/sessions").json()["total"] == sessions_before


def test_an_oversized_content_length_is_refused_before_the_body_is_read(
    server: ServerProcess, target: tuple[httpx.Client, str]
) -> None:
    http, sid = target
    before = http.get(f"/v1/sessions/{sid}").json()["offset"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(
            (
                f"POST /v1/sessions/{sid}/messages HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{server.port}\r\n"
                "Content-Type: application/json\r\n"
                "Content-Length: 100000000\r\n\r\n"
            ).encode()
            + b'{"content": "'
        )
        # no more of the body is ever sent: an answer proves it was not awaited
        answer = b""
        for _ in range(100):
            chunk = raw.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"payload_too_large" in answer
    assert http.get(f"/v1/sessions/{sid}").json()["offset"] == before


def test_a_chunked_body_over_the_limit_is_refused_while_streaming(
    target: tuple[httpx.Client, str],
) -> None:
    http, sid = target
    before = http.get(f"/v1/sessions/{sid}").json()["offset"]

    def chunks() -> Iterator[bytes]:
        yield b'{"content": "'
        for _ in range(17):
            yield b"a" * (64 * 1024)
        yield b'"}'

    response = http.post(f"/v1/sessions/{sid}/messages", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert http.get(f"/v1/sessions/{sid}").json()["offset"] == before


def test_a_body_at_the_limit_within_every_bound_is_accepted(
    target: tuple[httpx.Client, str],
) -> None:
    http, sid = target
    content = "é" * 1000
    metadata = {"n": 2**53 - 1, "m": -(2**53 - 1), "f": 1.5, "deep": [[[[["ok"]]]]]}
    response = http.post(
        f"/v1/sessions/{sid}/messages?wait=false",
        json={"content": content, "metadata": metadata},
    )
    assert response.status_code == 202, response.text
    assert response.json()["content"] == content
    assert response.json()["metadata"] == metadata


# --- unit level


def test_decode_accepts_depth_up_to_the_limit_and_refuses_one_more() -> None:
    limits = Limits(max_json_depth=4)
    assert decode(b'{"a": [[{"b": 1}]]}', limits) == {"a": [[{"b": 1}]]}
    with pytest.raises(GatewayError) as raised:
        decode(b'{"a": [[{"b": []}]]}', limits)
    assert raised.value.code == "json_too_deep"


def test_decode_refuses_numbers_beyond_the_safe_integer_range() -> None:
    limits = Limits()
    assert decode(b"[9007199254740991, -9007199254740991, true]", limits) == [
        2**53 - 1,
        -(2**53 - 1),
        True,
    ]
    for text in (
        b"[9007199254740992]",
        b"[-9007199254740992]",
        b"[1e300]",
        b"[18446744073709551615]",
    ):
        with pytest.raises(GatewayError) as raised:
            decode(text, limits)
        assert raised.value.code == "integer_out_of_range"


def test_fields_tells_absent_from_null_and_refuses_unknown_names() -> None:
    spec = {"name": "string?", "pinned": "boolean"}
    assert fields({"name": None}, spec) == {"name": None}
    assert fields({}, spec) == {}
    with pytest.raises(GatewayError):
        fields({"pinned": 1}, spec)
    with pytest.raises(GatewayError) as raised:
        fields({"evil": 1}, spec)
    assert "evil" not in raised.value.detail
