"""onmemos: the Python SDK of an onmemos server (``onmemos serve``): disposable, isolated workspaces (sessions).

    from onmemos import OnMemOSClient, NotFoundError

    client = OnMemOSClient("http://localhost:8080", "your-api-key")
    with client.session(namespace="team-a", user="alice") as ws:
        print(ws.execute("python3 --version")["stdout"])
"""

from ._core import V5, ExecResult, __version__
from .aio import AsyncExecStream, AsyncJsonShell, AsyncOnMemOSClient, AsyncWorkspace
from .client import ExecStream, JsonShell, OnMemOSClient, Workspace
from .errors import (
    ERROR_CODES,
    AuthError,
    ConflictError,
    ForbiddenError,
    InterruptedError,
    NotFoundError,
    OnmemosError,
    ProviderError,
    RequestTimeoutError,
    TooManyRequestsError,
    UnavailableError,
    UnsupportedError,
    UserError,
    error_from_response,
)

# InterruptedError (the TypeScript SDK's name) is importable by name but left out of `import *`, where it would
# shadow the builtin of the same name.
__all__ = [
    "ERROR_CODES",
    "V5",
    "AsyncExecStream",
    "AsyncJsonShell",
    "AsyncOnMemOSClient",
    "AsyncWorkspace",
    "AuthError",
    "ConflictError",
    "ExecResult",
    "ExecStream",
    "ForbiddenError",
    "JsonShell",
    "NotFoundError",
    "OnMemOSClient",
    "OnmemosError",
    "ProviderError",
    "RequestTimeoutError",
    "TooManyRequestsError",
    "UnavailableError",
    "UnsupportedError",
    "UserError",
    "Workspace",
    "__version__",
    "error_from_response",
]
_ = InterruptedError
