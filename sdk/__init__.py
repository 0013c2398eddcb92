"""The SDKs of onmemos that live outside the npm package: ``sdk.python`` (the Python SDK, also ``onmemos``)."""
