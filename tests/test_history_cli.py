"""End to end: a watchlist, a replayed clip, and the archive, hits matcher and notifiers as the processes users run.

Real Redis, real PostgreSQL (and the embedded SQLite default), real Mosquitto, a real HTTP webhook
receiver. The watchlist holds one plate of the clip typed in Cyrillic and one plate a confusable
(O for 0) off another plate of the clip: each must be hit once, in `anpr hits list`, on MQTT and
at the webhook.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import pytest
from history_support import Consumers, MqttInbox, WebhookInbox, anpr, history_config

from anpr.config import REPO_ROOT

CLIP = REPO_ROOT / "sample_videos" / "lane_day.mp4"
TRUTH = json.loads((REPO_ROOT / "sample_videos" / "lane_day.json").read_text())
PLATES = {e["plate"] for e in TRUTH["events"]}

pytestmark = pytest.mark.slow


def test_replay_raises_each_watchlist_hit_once_in_the_store_on_mqtt_and_at_the_webhook(
    store_url: str | None, tmp_path: Path, redis_prefix: str
) -> None:
    assert {"BH2741KX", "AI6093BC"} <= PLATES
    webhook = WebhookInbox()
    mqtt = MqttInbox(f"test-{redis_prefix}")
    cfg_path = history_config(tmp_path, redis_prefix, store_url, mqtt_prefix=mqtt.prefix, webhook=webhook)
    watchlist = tmp_path / "watchlist.csv"
    watchlist.write_text(
        "plate,mode,severity,reason\n"
        "ВН 2741 КХ,exact,stop,typed in Cyrillic\n"  # BH2741KX in Cyrillic letters
        "AI6O93BC,confusable,check,letter O where the plate has a zero\n",
        encoding="utf-8",
    )
    done = anpr("watchlist", "import", str(watchlist), "--by", "officer-1", config=cfg_path)
    assert done.returncode == 0, done.stderr
    with Consumers(cfg_path) as consumers:
        replay = anpr("replay", "--json", str(CLIP), config=cfg_path, timeout=300)
        assert replay.returncode == 0, replay.stderr
        events = [json.loads(line) for line in replay.stdout.splitlines() if line.startswith("{")]
        assert {e["plate"] for e in events} == PLATES

        hits = _wait(lambda: _hits(cfg_path), 2)
        assert sorted((h["event"]["plate"], h["entry"]["plate"], h["matched_as"]) for h in hits) == [
            ("AI6093BC", "AI6O93BC", "confusable"),
            ("BH2741KX", "BH2741KX", "exact"),
        ]
        mqtt_hits = _wait(lambda: mqtt.messages("hits"), 2)
        web_hits = _wait(lambda: webhook.messages("hits"), 2)
        time.sleep(1.5)  # anything raised twice would show by now
        assert sorted(m["hit_id"] for m in mqtt.messages("hits")) == sorted(h["hit_id"] for h in hits)
        assert sorted(m["hit_id"] for m in webhook.messages("hits")) == sorted(h["hit_id"] for h in hits)
        assert len(_hits(cfg_path)) == 2
        assert all(m["schema_version"] == 1 for m in mqtt_hits + web_hits)
        assert webhook.bad_signatures == 0

        stored = _wait(lambda: _search(cfg_path), len(events))
        assert sorted(e["event_id"] for e in stored) == sorted(e["event_id"] for e in events)
        for e in events:
            found = _search(cfg_path, e["plate"])
            assert [f["event_id"] for f in found] == [e["event_id"]]
        fuzzy = _search(cfg_path, "AI6O93BC", "--fuzzy")
        assert [f["plate"] for f in fuzzy] == ["AI6093BC"]

        stop_hit = next(h for h in hits if h["entry"]["severity"] == "stop")
        acked = anpr(
            "hits", "ack", stop_hit["hit_id"], "--disposition", "stopped", "--note", "lane 1 booth", config=cfg_path
        )
        assert acked.returncode == 0, acked.stderr
        unacked = anpr("hits", "list", "--unacked", "--json", config=cfg_path).stdout.splitlines()
        assert [json.loads(line)["hit_id"] for line in unacked] == [h["hit_id"] for h in hits if h is not stop_hit]
        ack = next(h["ack"] for h in _hits(cfg_path) if h["hit_id"] == stop_hit["hit_id"])
        assert (ack["disposition"], ack["note"]) == ("stopped", "lane 1 booth")
        assert consumers.alive()

    out = tmp_path / "events.csv"
    export = anpr("events", "export", "--format", "csv", "--output", str(out), config=cfg_path)
    assert export.returncode == 0, export.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert sorted(r["event_id"] for r in rows) == sorted(e["event_id"] for e in events)
    assert all(r["plate_image"].startswith("crops/") for r in rows)
    data_dir = tmp_path / "store"
    assert all((data_dir / r["plate_image"]).is_file() for r in rows)
    mqtt.close()
    webhook.close()


def _hits(cfg: Path) -> list[dict[str, Any]]:
    done = anpr("hits", "list", "--json", config=cfg)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _search(cfg: Path, *args: str) -> list[dict[str, Any]]:
    done = anpr("events", "search", "--json", *args, config=cfg)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _wait(get: Any, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got: list[dict[str, Any]] = get()
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def test_malformed_watchlist_csv_names_each_bad_line_and_field_and_changes_nothing(
    store_url: str | None, tmp_path: Path, redis_prefix: str
) -> None:
    cfg = history_config(tmp_path, redis_prefix, store_url)  # dev.yaml: cameras watch lane1 only
    good = tmp_path / "good.csv"
    good.write_text("plate,reason\nAA1234BB,listed before\n", encoding="utf-8")
    assert anpr("watchlist", "import", str(good), config=cfg).returncode == 0
    before = anpr("watchlist", "list", "--json", config=cfg).stdout

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "plate,valid_until,lanes\n"
        "BC5678AB,2027-01-01,lane1\n"  # fine, but must not be imported with the others
        "AA 12Ж4 BB,,\n"  # line 3: a Cyrillic letter with no Latin twin
        "AA1234BC,31/12/2026,\n"  # line 4: not an ISO date
        "AA1234BE,,lane9\n",  # line 5: no such lane
        encoding="utf-8",
    )
    done = anpr("watchlist", "import", str(bad), config=cfg)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert "3 bad rows, nothing imported" in lines[0]
    assert "line 3: plate" in lines[1] and "Ж" in lines[1]
    assert "line 4: valid_until" in lines[2]
    assert "line 5: lanes" in lines[3] and "lane9" in lines[3]
    assert anpr("watchlist", "list", "--json", config=cfg).stdout == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("events", "search", "AA1234BB", "--since", "yesterday"), "--since 'yesterday' is not a date"),
        (("events", "search", "--fuzzy"), "--fuzzy needs a PLATE"),
        (("events", "search", "AA1234BB", "--country", "UKR"), "not a two-letter ISO code"),
        (("watchlist", "add", "AA1234BB", "--severity", "urgent"), "severity"),
        (("hits", "ack", "no-such-hit"), "no unacknowledged hit"),
    ],
)
def test_bad_input_is_one_line_naming_it_and_exit_2(
    args: tuple[str, ...], message: str, tmp_path: Path, redis_prefix: str
) -> None:
    cfg = history_config(tmp_path, redis_prefix, None)
    done = anpr(*args, config=cfg)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr


def test_unreachable_database_is_one_line_and_exit_1(tmp_path: Path, redis_prefix: str) -> None:
    cfg = history_config(tmp_path, redis_prefix, "postgresql+psycopg://postgres@127.0.0.1:1/anpr")
    done = anpr("hits", "list", config=cfg)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and "store unavailable" in done.stderr, done.stderr


def test_watchlist_add_list_export_remove_round_trip(tmp_path: Path, redis_prefix: str) -> None:
    cfg = history_config(tmp_path, redis_prefix, None)
    added = anpr(
        "watchlist", "add", "ВН 2741 КХ", "--mode", "one_edit", "--severity", "stop", "--reason", "stolen",
        "--lane", "lane1", "--direction", "exit", "--valid-until", "2030-01-01", "--by", "officer-7", config=cfg,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    entry_id = added.stdout.strip()
    (entry,) = [json.loads(line) for line in anpr("watchlist", "list", "--json", config=cfg).stdout.splitlines()]
    assert (entry["entry_id"], entry["plate"], entry["mode"], entry["severity"]) == (
        entry_id,
        "BH2741KX",
        "one_edit",
        "stop",
    )
    assert (entry["lanes"], entry["directions"], entry["added_by"]) == (["lane1"], ["exit"], "officer-7")

    exported = tmp_path / "list.csv"
    assert anpr("watchlist", "export", str(exported), config=cfg).returncode == 0
    other = history_config(tmp_path / "other", redis_prefix, None)
    assert anpr("watchlist", "import", str(exported), config=other).returncode == 0
    (copy,) = [json.loads(line) for line in anpr("watchlist", "list", "--json", config=other).stdout.splitlines()]
    assert {k: v for k, v in copy.items() if k not in ("added_by", "added_at")} == {
        k: v for k, v in entry.items() if k not in ("added_by", "added_at")
    }

    assert anpr("watchlist", "remove", entry_id, "--by", "officer-8", config=cfg).returncode == 0
    assert anpr("watchlist", "list", "--json", config=cfg).stdout == ""
    assert entry_id in anpr("watchlist", "list", "--all", "--json", config=cfg).stdout
    again = anpr("watchlist", "remove", entry_id, config=cfg)
    assert again.returncode == 2 and "no active watchlist entry" in again.stderr
