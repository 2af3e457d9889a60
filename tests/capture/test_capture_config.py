"""CameraConfig: strict like the rest of the tree, with bounds that keep every wait finite."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from anpr.config import CameraConfig


def test_defaults_bound_every_wait() -> None:
    cfg = CameraConfig(name="lane1-front", source="rtsp://10.0.0.5/stream1")
    assert cfg.rtsp_transport == "tcp" and cfg.max_attempts is None
    assert 0 < cfg.open_timeout_ms <= 60_000 and 0 < cfg.read_timeout_ms <= 60_000
    assert cfg.backoff_initial_s <= cfg.backoff_max_s


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "lane 1"}, "name"),  # names end up in event ids and Redis keys
        ({"source": ""}, "source"),
        ({"read_timeout_ms": 0}, "read_timeout_ms"),
        ({"open_timeout_ms": 600_000}, "open_timeout_ms"),
        ({"rtsp_transport": "http"}, "rtsp_transport"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"read_timout_ms": 500}, "read_timout_ms"),  # misspelt: an error, never ignored
    ],
)
def test_bad_values_name_the_field(overrides: dict[str, object], field: str) -> None:
    settings: dict[str, object] = {"name": "cam1", "source": "0", **overrides}
    with pytest.raises(ValidationError) as err:
        CameraConfig.model_validate(settings)
    assert [e["loc"] for e in err.value.errors()] == [(field,)]
