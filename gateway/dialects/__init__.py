"""Drop-in dialects of the systems sessiond replaces, each a thin mapping onto
``runtime.Runtime`` with the original's paths, envelopes, fields and codes:

- :mod:`gateway.dialects.eliza` — ElizaOS messaging sessions,
  ``/api/messaging/sessions``
- :mod:`gateway.dialects.assistant` — the kcosr/assistant sessions plugin,
  ``POST /api/plugins/sessions/operations/<op>``
- :mod:`gateway.dialects.wingman` — wingman's session server, ``/sessions``

Their routes are mounted beside the native API's; the OpenAPI document describes
the native API only.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.routing import BaseRoute

from gateway.dialects import assistant, eliza, wingman
from runtime import WebhookFormat

ROUTES: list[BaseRoute] = [*eliza.ROUTES, *assistant.ROUTES, *wingman.ROUTES]

WEBHOOK_FORMATS: Mapping[str, WebhookFormat] = {
    assistant.WEBHOOK_FORMAT: assistant.webhook_payload,
}
"""The webhook payload formats the dialects promise, registered with the runtime
when the app starts."""
