"""Exchange of plate events with the partner customs service across the border.

- `envelope`: the versioned message, its canonical serialisation and its Ed25519 signature;
- `transport`: how signed messages reach the partner (HTTP, or XADD into the partner's Redis);
- `publisher`: consumes our events stream and delivers every event once, nothing lost;
- `receiver`: the reference partner receiver (verifies, deduplicates, stores);
- `matching`: pairs the partner's exit events with our entry events and raises alerts.

The wire protocol is documented for partners in docs/exchange-protocol.md.
"""
