"""RuntimeConfig / HealthConfig: defaults valid, strict keys, bounds, ring outlasts the queue."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from anpr.config import HealthConfig, RuntimeConfig


def test_defaults_are_valid() -> None:
    cfg = RuntimeConfig()
    assert cfg.ring_slots >= cfg.worker_queue_size + 2
    assert cfg.health == HealthConfig()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"worker_queue_size": 8, "ring_slots": 9}, "ring_slots \\(9\\) must be at least worker_queue_size \\+ 2"),
        ({"workers": 0}, "greater than or equal to 1"),
        ({"ring_slots": 2}, "greater than or equal to 3"),
        ({"restart_backoff_initial_s": 0}, "greater than 0"),
        ({"health": {"port": 70000}}, "less than or equal to 65535"),
        ({"worker": 2}, "Extra inputs are not permitted"),
        ({"health": {"prot": 1}}, "Extra inputs are not permitted"),
    ],
    ids=["ring-too-small", "no-workers", "ring-tiny", "zero-backoff", "bad-port", "misspelt-key", "misspelt-nested"],
)
def test_invalid_settings_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RuntimeConfig(**data)


def test_every_field_is_described() -> None:
    for model in (RuntimeConfig, HealthConfig):
        undocumented = [name for name, f in model.model_fields.items() if not f.description]
        assert not undocumented, f"{model.__name__}: {undocumented}"
