"""A seconds-long run of the reliability soak (the benchmark runs it for 10 minutes): separate API, worker and
redis-server processes under load while a worker is SIGKILLed, Redis restarts, bad indexes are published and bad
requests are sent. Nothing may be lost or applied twice, and no response may be a 500."""

from __future__ import annotations

import pytest

from bench.reliability import failures, run
from cli.console import make_console

pytestmark = pytest.mark.e2e


def test_a_short_soak_under_faults_loses_nothing():
    result, tally = run(seconds=24, console=make_console(), n_items=3000)
    assert failures(result) == []
    assert result["faults_injected"] == 6 and result["events_ingested"] > 1000
    assert result["bad_inputs_tried"] > 200 and result["requests_served"] > 500
    assert {"events_ingested", "events_lost", "events_applied_twice", "faults_injected", "requests_served",
            "responses_5xx", "bad_inputs_tried"} <= set(result)
    assert result["rss_mb"]["api"]["end"] > 0 and len(tally.rss) > 5 and tally.latencies
