"""``from sdk.python.client import OnMemOSClient``, as the OnMemOS document writes it: a re-export of the
``onmemos`` package (``pip install ./sdk/python``). From a checkout where it is not installed, the checkout's own
copy (``sdk/python/src``) is used; its dependencies (httpx, websockets) must be installed either way."""

import sys
from pathlib import Path

try:
    import onmemos as _onmemos
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    import onmemos as _onmemos

from onmemos import *  # noqa: E402,F401,F403
from onmemos import InterruptedError  # noqa: E402,F401,A004

__all__ = list(_onmemos.__all__)
