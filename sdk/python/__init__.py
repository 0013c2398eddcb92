"""The OnMemOS document's import path from a checkout: ``from sdk.python.client import OnMemOSClient``. The one
implementation is the ``onmemos`` package (``sdk/python/src/onmemos``); see ``client.py`` here."""
