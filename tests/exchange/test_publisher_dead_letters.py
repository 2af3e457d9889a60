"""Dead letters an operator sees and can act on: a paused delivery, --check, /metrics, retry exactly once.

Real Redis, the real receiver as a child process, the publisher as the CLI an operator runs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support import free_port

from anpr.exchange.envelope import public_key_b64
from anpr.exchange.publisher import config_fault, problems, report
from anpr.schema import PlateEvent

if TYPE_CHECKING:
    from conftest import Exchange, ProcessReceiver

    EventFactory = Callable[..., PlateEvent]

ROTATED = "ua-rotated-2"  # the id the publisher signs with after a botched key rotation


def cli(cfg: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anpr.exchange", "publisher", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stats(ex: Exchange, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in ex.r.hgetall(key).items()}


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 30, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{log.read_text()[-3000:]}" if log else ""))
        time.sleep(0.05)


def scrape(port: int) -> dict[str, float]:
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {s.name: s.value for fam in text_string_to_metric_families(body) for s in fam.samples}


def test_config_fault_tells_a_refused_key_from_a_refused_message() -> None:
    unknown = 'HTTP 403: {"error":"unknown_key","detail":"key id \'k\' is not trusted","index":0}'
    assert "does not trust publisher.key_id" in (config_fault(unknown) or "")
    assert "signing_key_file does not match" in (config_fault('HTTP 401: {"error":"bad_signature"}') or "")
    assert "clock" in (config_fault('HTTP 401: {"error":"timestamp_out_of_window"}') or "")
    assert config_fault("HTTP 401: <html>proxy auth</html>") is not None  # any 401 is about us
    assert config_fault("partner redis refused: NOPERM this user has no permissions") is not None
    # Refusals of one message stay dead letters: another 403, a too-large or invalid message.
    assert config_fault('HTTP 403: {"error":"forbidden"}') is None
    assert config_fault('HTTP 413: {"error":"too_large"}') is None
    assert config_fault('HTTP 422: {"error":"wrong_receiver"}') is None
    assert config_fault("partner redis refused: WRONGTYPE") is None


@pytest.mark.slow
def test_untrusted_key_pauses_delivery_until_the_partner_trusts_it(
    exchange: Exchange,
    process_receiver: Callable[..., ProcessReceiver],
    event_factory: EventFactory,
    tmp_path: Path,
) -> None:
    # The partner trusts our public key under the old id; we sign with a new one.
    receiver_cfg = tmp_path / "receiver.yaml"
    receiver_cfg.write_text(yaml.safe_dump(exchange.config_dict()))
    receiver = process_receiver(receiver_cfg, exchange.receiver_port)
    metrics_port = free_port()
    pub_cfg = exchange.write_config(publisher={"key_id": ROTATED, "metrics_port": metrics_port})
    events = [event_factory(i) for i in range(20)]
    exchange.add_events(events)

    # A burst run (a catch-up job) stops at once, says why, and dead-letters nothing.
    burst = cli(pub_cfg, "--burst")
    assert burst.returncode == 1, burst.stderr[-2000:]
    assert "delivery paused" in burst.stderr and "does not trust publisher.key_id" in burst.stderr
    assert exchange.r.xlen(exchange.keys.exchange_dead) == 0

    log = tmp_path / "publisher.log"
    with log.open("wb") as out:
        pub = subprocess.Popen(
            [sys.executable, "-m", "anpr.exchange", "publisher", "--config", str(pub_cfg)], stdout=out, stderr=out
        )
    try:
        # Retried with backoff (a log line and a counted attempt each time), never dead-lettered.
        wait_for("3 refused attempts logged", lambda: log.read_text().count("delivery PAUSED") >= 3, log=log)
        assert stats(exchange, exchange.keys.publisher_stats)["config_faults"] >= 4  # the burst's, then 3 more
        assert exchange.r.xlen(exchange.keys.exchange_dead) == 0
        assert exchange.inbox_ids() == []
        check = cli(pub_cfg, "--check")
        assert check.returncode == 1, check.stdout
        assert "delivery paused since" in check.stderr and "does not trust publisher.key_id" in check.stderr
        m = scrape(metrics_port)
        assert m["anpr_publisher_paused"] == 1 and m["anpr_publisher_config_faults_total"] >= 3
        assert m["anpr_publisher_dead_lettered_total"] == 0 and m["anpr_publisher_dead_letters"] == 0
        assert m["anpr_publisher_pending"] + m["anpr_publisher_lag"] == 20

        # The partner adds the new key id; the paused publisher notices by itself.
        receiver.stop()
        trusted = {"trusted_keys": {ROTATED: public_key_b64(exchange.key)}}
        receiver_cfg.write_text(yaml.safe_dump(exchange.config_dict(receiver=trusted)))
        receiver.start()
        wait_for("20 stored", lambda: len(exchange.inbox_ids()) == 20, log=log)
        wait_for("pause cleared", lambda: scrape(metrics_port)["anpr_publisher_paused"] == 0, log=log)
        m = scrape(metrics_port)
        assert m["anpr_publisher_delivered_total"] == 20 and m["anpr_publisher_dead_lettered_total"] == 0
        assert "delivery resumed" in log.read_text()
        check = cli(pub_cfg, "--check")
        assert check.returncode == 0, check.stderr
    finally:
        pub.terminate()
        assert pub.wait(timeout=15) == 0, log.read_text()[-3000:]
    assert sorted(exchange.inbox_ids()) == sorted(e.event_id for e in events)
    assert stats(exchange, exchange.keys.receiver_stats) == {"stored": 20}  # each once, no duplicate
    assert exchange.r.xlen(exchange.keys.exchange_dead) == 0


@pytest.mark.slow
def test_dead_letters_fail_check_and_a_retry_sends_each_once(
    exchange: Exchange,
    process_receiver: Callable[..., ProcessReceiver],
    event_factory: EventFactory,
    tmp_path: Path,
) -> None:
    # Addressed to the wrong receiver: the partner refuses each message (422), a fault of the message.
    receiver_cfg = exchange.write_config()
    process_receiver(receiver_cfg, exchange.receiver_port)
    wrong = exchange.write_config(publisher={"receiver": "md-other", "check_dead_streak": 5, "metrics_port": 0})
    events = [event_factory(i) for i in range(6)]
    exchange.add_events(events)

    burst = cli(wrong, "--burst")
    assert burst.returncode == 1 and "6 events dead-lettered" in burst.stderr, burst.stderr[-2000:]
    check = cli(wrong, "--check")
    assert check.returncode == 1
    assert "the last 6 deliveries were all dead-lettered" in check.stderr and "wrong_receiver" in check.stderr

    listed = cli(wrong, "dead-letters", "list")
    assert listed.returncode == 0 and "6 dead letters" in listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 6 and all("partner refused: HTTP 422" in line for line in lines)
    ids = [line.split()[0] for line in lines]

    # Fixed: the right receiver. Retry one by id, then all; repeat both: nothing is queued twice.
    fixed = exchange.write_config(publisher={"check_dead_streak": 5, "metrics_port": 0})
    one = cli(fixed, "dead-letters", "retry", ids[0])
    assert one.returncode == 0 and "re-queued 1 " in one.stdout
    again = cli(fixed, "dead-letters", "retry", ids[0])
    assert again.returncode == 1 and "re-queued 0 " in again.stdout and "no such dead letter" in again.stderr
    # --config before the subcommand works as well.
    rest = subprocess.run(
        [sys.executable, "-m", "anpr.exchange", "publisher", "-c", str(fixed), "dead-letters", "retry", "--all"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rest.returncode == 0 and "re-queued 5 " in rest.stdout, rest.stderr
    assert cli(fixed, "dead-letters", "retry", "--all").stdout.startswith("re-queued 0 ")
    assert cli(fixed, "dead-letters", "retry").returncode == 2  # neither ids nor --all
    assert exchange.r.xlen(exchange.keys.exchange_dead) == 0
    assert exchange.r.xlen(exchange.keys.exchange_redrive) == 6

    burst = cli(fixed, "--burst")
    assert burst.returncode == 0, burst.stderr[-2000:]
    assert sorted(exchange.inbox_ids()) == sorted(e.event_id for e in events)
    assert stats(exchange, exchange.keys.receiver_stats) == {"stored": 6}  # sent once each: no duplicate
    assert exchange.r.xlen(exchange.keys.exchange_redrive) == 0  # delivered re-queued entries are removed
    totals = stats(exchange, exchange.keys.publisher_stats)
    assert totals["delivered"] == 6 and totals["dead_lettered"] == 6 and totals["redriven"] == 6
    check = cli(fixed, "--check")
    assert check.returncode == 0, check.stderr


def test_check_fails_when_the_oldest_undelivered_event_is_too_old(
    exchange: Exchange, event_factory: EventFactory
) -> None:
    cfg = exchange.config(publisher={"check_max_age_s": 600})
    stream, group = exchange.keys.events, cfg.publisher.group
    ids = [exchange.r.xadd(stream, {"event": event_factory(i).model_dump_json()}).decode() for i in range(3)]
    born = [int(i.split("-")[0]) / 1000 for i in ids]

    def age(now: float) -> Any:
        return report(exchange.r, cfg, now)["oldest_undelivered_age_s"]

    assert age(born[0] + 30) == pytest.approx(30, abs=0.01)  # no group yet: the first entry waits
    exchange.r.xgroup_create(stream, group, id="0")
    exchange.r.xreadgroup(group, "pub-1", {stream: ">"}, count=2)
    exchange.r.xack(stream, group, ids[1])
    assert age(born[0] + 30) == pytest.approx(30, abs=0.01)  # read, not acknowledged: still waiting
    exchange.r.xack(stream, group, ids[0])
    assert age(born[2] + 30) == pytest.approx(30, abs=0.01)  # the one never read
    rep = report(exchange.r, cfg, born[2] + 601)
    assert any("oldest undelivered event is 601 s old" in p for p in problems(rep, cfg))
    exchange.r.xreadgroup(group, "pub-1", {stream: ">"})
    exchange.r.xack(stream, group, ids[2])
    assert age(born[2] + 10_000) is None
    assert not any("oldest" in p for p in problems(report(exchange.r, cfg, born[2] + 10_000), cfg))
