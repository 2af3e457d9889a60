"""`anpr run`: every camera of a site, live, until SIGINT/SIGTERM.

The parent resolves what all processes must share before any child starts: the Redis URL (an
embedded Redis is started here, once, not by each worker) and the handler factory. The runtime
(anpr.runtime) then supervises camera and worker processes.
"""

from __future__ import annotations

import functools
import logging

from anpr.config import AnprConfig
from anpr.events import Spool, SpoolTarget
from anpr.lane import build_lane_handler
from anpr.redis_client import connect
from anpr.runtime.live import Runtime
from anpr.runtime.stages import CameraFeed

log = logging.getLogger(__name__)


def with_shared_redis(cfg: AnprConfig) -> AnprConfig:
    """The config with a concrete Redis URL: the embedded Redis starts in this process if none is set."""
    if cfg.redis.url is not None:
        return cfg
    from anpr.redis_embedded import start_embedded

    url = start_embedded(cfg.redis.data_dir)
    log.info("no Redis URL configured: embedded Redis at %s", url)
    return cfg.model_copy(update={"redis": cfg.redis.model_copy(update={"url": url})})


def run_site(cfg: AnprConfig) -> None:
    if not cfg.cameras:
        raise ValueError("no cameras configured: add a `cameras:` list to the config (see configs/site-example.yaml)")
    cfg = with_shared_redis(cfg)
    client = connect(cfg.redis)
    # Claimed here, before any worker starts: a spool of another destination stops the command at once
    # (SpoolError, one line) instead of crash-looping every worker.
    spool = Spool(cfg.events.spool_dir, cfg.events.spool_max_bytes, target=SpoolTarget.of(cfg.redis))

    def redis_ok() -> bool:
        return bool(client.ping())

    runtime = Runtime(
        cfg.runtime,
        [CameraFeed.live(c) for c in cfg.cameras],
        functools.partial(build_lane_handler, cfg),
        redis_ok=redis_ok,
        spool_depth=lambda: len(spool.files()),
    )
    log.info("site %s: %d cameras, %d workers", cfg.site.name, len(cfg.cameras), cfg.runtime.workers)
    runtime.run()
