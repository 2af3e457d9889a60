"""Print the JSON Schemas of the exchange wire format, generated from the code that enforces it.

    .venv/bin/python scripts/exchange_schema.py

docs/exchange-protocol.md embeds this output; tests/exchange/test_exchange_envelope.py fails when
the two disagree, so the document a partner builds from is always the one our receiver enforces.
"""

from __future__ import annotations

import json
from typing import Any

from anpr.exchange.envelope import Envelope, SignedMessage


def schemas() -> dict[str, dict[str, Any]]:
    request = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "POST /v1/messages request body",
        "type": "object",
        "additionalProperties": False,
        "required": ["messages"],
        "properties": {"messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/SignedMessage"}}},
        "$defs": _flatten(SignedMessage.model_json_schema()),
    }
    payload = {"$schema": "https://json-schema.org/draft/2020-12/schema", **Envelope.model_json_schema()}
    return {"request": request, "payload": payload}


def _flatten(schema: dict[str, Any]) -> dict[str, Any]:
    """SignedMessage and the definitions it refers to, side by side under one $defs."""
    defs = dict(schema.pop("$defs", {}))
    # The receiver parses a missing signature so it can answer 401 `unsigned` instead of 400; on the
    # wire a signature is required, which is what a partner's sender must know.
    schema["properties"]["signature"] = {"$ref": "#/$defs/Signature"}
    schema["required"] = ["payload", "signature"]
    defs[schema["title"]] = schema
    return defs


def main() -> None:
    for name, schema in schemas().items():
        print(f"## {name}\n")
        print(json.dumps(schema, indent=2, sort_keys=True))
        print()


if __name__ == "__main__":
    main()
