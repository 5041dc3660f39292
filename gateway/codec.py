"""Strict JSON in, orjson out.

A request body must be ``application/json`` (or ``application/*+json``), valid
UTF-8 without a BOM, one JSON object with nothing after it, no ``NaN`` or
``Infinity``, nested at most ``max_json_depth`` deep, with every number within
±(2^53 - 1) (what every JSON peer represents exactly), and only the fields the
route knows. Each refusal has its own code; none quotes the input back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from gateway.errors import GatewayError
from gateway.limits import Limits, too_large

MAX_SAFE_INTEGER = 2**53 - 1
ABSENT: Any = object()


class JSONResponse(Response):
    """A JSON response rendered by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Encode ``content`` (datetimes are RFC 3339, non-str keys refused)."""
        return orjson.dumps(content)


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact JSON."""
    return orjson.dumps(value)


def invalid(detail: str) -> GatewayError:
    """A 400 ``invalid_request``."""
    return GatewayError("invalid_request", detail)


# --- decoding


def _is_json_media_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    media_type, _, parameters = content_type.partition(";")
    media_type = media_type.strip().lower()
    charset = parameters.strip().lower()
    if charset and charset.replace(" ", "") not in ("charset=utf-8", 'charset="utf-8"'):
        return False
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def check_shape(value: Any, limits: Limits) -> None:
    """Refuse nesting deeper than the limit and numbers outside ±(2^53 - 1)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limits.max_json_depth:
                raise GatewayError(
                    "json_too_deep",
                    f"JSON may nest at most {limits.max_json_depth} levels",
                )
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        # orjson turns integers beyond 64 bits into floats; a float this large
        # is integral, so one check covers both.
        elif (
            isinstance(item, int | float)
            and not isinstance(item, bool)
            and abs(item) > MAX_SAFE_INTEGER
        ):
            raise GatewayError(
                "integer_out_of_range", "numbers must lie within ±(2^53 - 1)"
            )


def decode(body: bytes, limits: Limits) -> Any:
    """Parse a body strictly (see the module docstring)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        if "depth limit" in str(error) or "recursion" in str(error):
            raise GatewayError(
                "json_too_deep", f"JSON may nest at most {limits.max_json_depth} levels"
            ) from None
        if not body:
            raise GatewayError("invalid_json", "the body is empty") from None
        raise GatewayError(
            "invalid_json", "the body is not valid JSON (UTF-8, no BOM, no NaN)"
        ) from None
    check_shape(value, limits)
    return value


async def read_body(request: Request, limits: Limits) -> bytes:
    """The body, read chunk by chunk and refused once over the limit."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise too_large(limits.max_body_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(
    request: Request, limits: Limits, *, required: bool = True
) -> dict[str, Any] | None:
    """The request's JSON object; ``None`` for an empty optional body."""
    body = await read_body(request, limits)
    if not body:
        if required:
            raise GatewayError("invalid_json", "the body is empty; send a JSON object")
        return None
    if not _is_json_media_type(request.headers.get("content-type")):
        raise GatewayError(
            "unsupported_media_type", "send the body as application/json (UTF-8)"
        )
    value = decode(body, limits)
    if not isinstance(value, dict):
        raise invalid("the body must be a JSON object")
    return value


def check_metadata(name: str, value: Any, limits: Limits) -> None:
    """Refuse a metadata-like object over the size limit."""
    if value is not None and len(orjson.dumps(value)) > limits.max_metadata_bytes:
        raise GatewayError(
            "metadata_too_large",
            f"{name} may take at most {limits.max_metadata_bytes} bytes as JSON",
        )


# --- fields

Check = Callable[[Any], bool]


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


KINDS: Mapping[str, tuple[Check, str]] = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "integer": (_integer, "an integer"),
    "number": (_number, "a number"),
    "boolean": (lambda v: isinstance(v, bool), "a boolean"),
    "object": (lambda v: isinstance(v, dict), "an object"),
    "array": (lambda v: isinstance(v, list), "an array"),
}


def fields(
    body: Mapping[str, Any] | None,
    spec: Mapping[str, str],
    *,
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Check a body against ``spec`` (field -> kind, ``?`` suffix allows null).

    Unknown fields are refused (no mass assignment); absent fields are left
    out of the result, so callers can tell absent from null.
    """
    body = body or {}
    unknown = [name for name in body if name not in spec]
    if unknown:
        allowed = ", ".join(sorted(spec)) or "none"
        raise invalid(
            f"the body has a field this route does not take (allowed: {allowed})"
        )
    for name in required:
        if body.get(name) is None:
            raise invalid(f"{name} is required")
    checked: dict[str, Any] = {}
    for name, kind in spec.items():
        if name not in body:
            continue
        value = body[name]
        nullable = kind.endswith("?")
        check, label = KINDS[kind.rstrip("?")]
        if value is None and nullable:
            checked[name] = None
            continue
        if not check(value):
            raise invalid(f"{name} must be {label}{' or null' if nullable else ''}")
        checked[name] = value
    return checked


# --- query


def query(connection: HTTPConnection, spec: Mapping[str, str]) -> dict[str, Any]:
    """Parse query parameters against ``spec`` (``string``, ``integer``,
    ``boolean``); unknown or repeated parameters are refused."""
    params = connection.query_params
    unknown = [name for name in params if name not in spec]
    if unknown:
        allowed = ", ".join(sorted(spec)) or "none"
        raise invalid(f"unknown query parameter (allowed: {allowed})")
    parsed: dict[str, Any] = {}
    for name, kind in spec.items():
        values = params.getlist(name)
        if not values:
            continue
        if len(values) > 1:
            raise invalid(f"query parameter {name} is given more than once")
        parsed[name] = _parse_query_value(name, values[0], kind)
    return parsed


def _parse_query_value(name: str, raw: str, kind: str) -> Any:
    if kind == "integer":
        return parse_offset_text(raw, name)
    if kind == "boolean":
        if raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0"):
            return False
        raise invalid(f"{name} must be true or false")
    return raw


def parse_offset_text(raw: str, name: str) -> int:
    """A non-negative integer written in decimal (headers and query values)."""
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 16:
        raise invalid(f"{name} must be a non-negative integer")
    value = int(text)
    if value > MAX_SAFE_INTEGER:
        raise GatewayError("integer_out_of_range", f"{name} must be at most 2^53 - 1")
    return value
