"""The thin layer over ``runtime.Runtime``: the native HTTP API (``gateway.app``,
routes in ``gateway.routes``), the command line, the Python client and the chat."""
