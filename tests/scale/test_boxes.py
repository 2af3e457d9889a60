"""Site config over several boxes and Sentinel settings; box heartbeats on the shared Redis (fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import yaml

from anpr.config import AnprConfig, ConfigError, HealthConfig, RedisConfig, load_config
from anpr.events import SpoolTarget
from anpr.keys import Keys
from anpr.redis_client import connect
from anpr.run import BoxHeartbeat, box_cameras
from anpr.runtime.health import HealthSources, health_document

SENTINELS = ["10.0.0.2:26379", "10.0.0.1:26379", "[::1]:26380"]


def site(box: str | None = None, **redis_cfg: object) -> AnprConfig:
    cameras = [
        {"name": "front1", "source": "a.mp4", "box": "b1"},
        {"name": "rear1", "source": "b.mp4", "box": "b1"},
        {"name": "front2", "source": "c.mp4", "box": "b2"},
    ]
    return AnprConfig(cameras=cameras, runtime={"box": box}, redis=redis_cfg)  # type: ignore[arg-type]


def test_one_redis_location_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"redis": {"url": "redis://h:6379/0", "sentinels": SENTINELS}}))
    with pytest.raises(ConfigError, match=r"either redis\.url or redis\.sentinels") as err:
        load_config(path)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="go together"):
        RedisConfig(sentinels=SENTINELS)
    with pytest.raises(ValueError, match="not host:port"):
        RedisConfig(sentinels=["10.0.0.1"], sentinel_master="m")
    RedisConfig()  # neither: the embedded Redis, as before


def test_a_box_runs_its_own_cameras_and_every_camera_has_a_box() -> None:
    assert [c.name for c in box_cameras(site("b1"))] == ["front1", "rear1"]
    assert [c.name for c in box_cameras(site())] == ["front1", "rear1", "front2"]
    with pytest.raises(ValueError, match=r"no camera has box 'b3'.*\['b1', 'b2'\]"):
        box_cameras(site("b3"))
    with pytest.raises(ValueError, match=r"cameras \['y'\] have no box"):
        AnprConfig(cameras=[{"name": "x", "source": "a", "box": "b1"}, {"name": "y", "source": "b"}])  # type: ignore[list-item]


def test_the_spool_of_a_sentinel_site_is_named_by_master_and_sentinels_not_by_the_primary() -> None:
    cfg = RedisConfig(sentinels=SENTINELS, sentinel_master="site1", prefix="p")
    target = SpoolTarget.of(cfg)
    assert target == SpoolTarget.of_client(connect(cfg), "p")  # the sink's default agrees with the config
    assert target == SpoolTarget.of(cfg.model_copy(update={"sentinels": list(reversed(SENTINELS))}))
    assert target != SpoolTarget.of(cfg.model_copy(update={"sentinel_master": "site2"}))
    assert target.url.startswith("sentinel://")


def test_the_site_view_names_a_box_without_heartbeat(client: redis.Redis, redis_prefix: str) -> None:
    cfg = site("b1", url="redis://127.0.0.1:6379/0", prefix=redis_prefix)
    beat = BoxHeartbeat(cfg, client, lambda: {"front1": "streaming", "rear1": "reconnecting"})
    beat.beat()
    ttl_ms = client.pttl(Keys(redis_prefix).site_box("b1"))
    assert 0 < ttl_ms <= cfg.runtime.box_heartbeat_ttl_s * 1000
    view = beat.site()
    assert view["b1"]["up"] and view["b1"]["cameras"] == {"front1": "streaming", "rear1": "reconnecting"}
    assert view["b2"] == {"up": False, "cameras": ["front2"]}

    status, doc = health_document(HealthSources(list, dict, site=beat.site), HealthConfig())
    assert status == 200 and doc["status"] == "degraded"  # the dead box's own /health is the one that fails
    assert doc["problems"] == ["box b2 down: no heartbeat; its cameras front2 are not running"]
    assert doc["site"]["boxes"]["b1"]["up"]

    beat.box = "b2"  # the other box comes up: nobody is named down
    beat.beat()
    assert health_document(HealthSources(list, dict, site=beat.site), HealthConfig())[1]["problems"] == []
