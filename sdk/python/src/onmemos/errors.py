"""Typed errors, mirroring the TypeScript SDK (src/errors.ts): every failure the server reports is an
:class:`OnmemosError` with the server's ``error.code``, its message, the HTTP status and an optional hint."""

from __future__ import annotations

import builtins
from typing import Any, Dict, Optional

#: Each error code of the API with its HTTP status (src/errors.ts ERROR_CODES).
ERROR_CODES: Dict[str, int] = {
    "usage": 400,
    "bad_request": 400,
    "invalid_argument": 422,
    "unsupported": 422,
    "auth": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "too_large": 413,
    "unsupported_media_type": 415,
    "misdirected_request": 421,
    "too_many_requests": 429,
    "interrupted": 499,
    "internal": 500,
    "provider_error": 502,
    "unavailable": 503,
    "timeout": 504,
}


class OnmemosError(Exception):
    """An error of onmemos: ``code`` (the server's ``error.code``), ``message``, ``status`` and ``hint``."""

    default_code = "internal"

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        status: Optional[int] = None,
        hint: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: str = code or self.default_code
        self.status: int = status if status is not None else ERROR_CODES.get(self.code, 500)
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UserError(OnmemosError):
    """A bad argument or request field (400/422): nothing was made."""

    default_code = "invalid_argument"


class UnsupportedError(OnmemosError):
    """The session's provider cannot do what the request asks (422)."""

    default_code = "unsupported"


class NotFoundError(OnmemosError):
    """No such session, or one of a namespace the key may not see (404)."""

    default_code = "not_found"


class ConflictError(OnmemosError):
    """The session exists but cannot do this now (409: not running)."""

    default_code = "conflict"


class UnavailableError(OnmemosError):
    """The server, or a provider behind it, is out of reach or not configured (503)."""

    default_code = "unavailable"


class ProviderError(OnmemosError):
    """A backend call failed (502), or the server answered something unreadable."""

    default_code = "provider_error"


class AuthError(OnmemosError):
    """No API key, or a wrong one (401)."""

    default_code = "auth"


class ForbiddenError(OnmemosError):
    """The API key may not use that namespace, or the server refuses the request (403)."""

    default_code = "forbidden"


class InterruptedError(OnmemosError):
    """A create the server abandoned because its client went away (499)."""

    default_code = "interrupted"


class TooManyRequestsError(OnmemosError):
    """The key's ``--max-concurrent`` limit is reached (429)."""

    default_code = "too_many_requests"


class RequestTimeoutError(UnavailableError, builtins.TimeoutError):
    """No answer within the client's timeout (also a builtin :class:`TimeoutError`)."""

    default_code = "timeout"


_BY_CODE = {
    "auth": AuthError,
    "forbidden": ForbiddenError,
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "unsupported": UnsupportedError,
    "unavailable": UnavailableError,
    "provider_error": ProviderError,
    "usage": UserError,
    "bad_request": UserError,
    "invalid_argument": UserError,
    "interrupted": InterruptedError,
    "too_many_requests": TooManyRequestsError,
}


def _code_for_status(status: int) -> str:
    for code, s in ERROR_CODES.items():
        if s == status and code != "timeout":
            return code
    return "provider_error" if status >= 500 else "bad_request"


def error_from_response(status: int, body: Any) -> OnmemosError:
    """The typed error for an error answer of the API (``{"error":{"code","message","hint"?}}``)."""
    raw = body.get("error") if isinstance(body, dict) else None
    err: Dict[str, Any] = raw if isinstance(raw, dict) else {}
    message = str(err["message"]) if isinstance(err.get("message"), str) else f"the server answered HTTP {status}"
    hint: Optional[str] = str(err["hint"]) if isinstance(err.get("hint"), str) else None
    given = err.get("code")
    code: str = given if isinstance(given, str) and given in ERROR_CODES else _code_for_status(status)
    if code == "auth" and hint is None:
        hint = "pass the server's API key: OnMemOSClient(base_url, api_key)"
    cls = _BY_CODE.get(code, OnmemosError)
    return cls(message, code=code, status=status, hint=hint)
