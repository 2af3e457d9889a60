"""Multi-process runtime of the live pipeline (DESIGN 4 and 5), modelled on Frigate.

- ring.py: per-camera shared-memory frame ring; `write(frame) -> FrameRef`, `read(ref) -> image | None`.
- stages.py: the camera and worker process bodies, and the integration seam: a `FrameHandler`
  (handle / flush / close) built inside each worker by a picklable `HandlerFactory`.
- process.py: the process base: title, logs to the parent, one stop flag, stats reports.
- supervisor.py: starts the children, restarts crashed ones with capped exponential backoff, stops them.
- stats.py: per-process counters (fps, dropped, latency p50/p95) and the report sent to the parent.
- health.py: /health (JSON) and /metrics (Prometheus) over HTTP.
- live.py: `Runtime`, which assembles all of it; `Runtime(...).run()` is `anpr run`.

Nothing is imported here: child processes import only the modules they need.
"""
