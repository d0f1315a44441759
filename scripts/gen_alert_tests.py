#!/usr/bin/env python3
"""Writes examples/monitoring/alerts_test.yml: for every alert in alerts.yml, a
series that fires it and one just under the threshold that does not.

The expected annotations are rendered from alerts.yml (promtool compares them
whole), so editing an alert's text needs only a rerun:
    python3 scripts/gen_alert_tests.py
"""
import pathlib
import re

import yaml

here = pathlib.Path(__file__).resolve().parent.parent / "examples" / "monitoring"
rules = {r["alert"]: r for g in yaml.safe_load((here / "alerts.yml").read_text())["groups"] for r in g["rules"]}


def bucket_series(pool, per_minute):
    """Histogram bucket series of pgkit_query_duration_seconds growing by per_minute[le] a minute."""
    return [{"series": f'pgkit_query_duration_seconds_bucket{{job="chat",instance="a",pool="{pool}",name="q",op="query",outcome="ok",le="{le}"}}',
             "values": f"0+{n}x20"} for le, n in per_minute.items()]


# alert -> (input series, eval time, labels of the one alert expected, $value)
cases = {
    "PgkitPoolSaturated": ([
        {"series": 'pgkit_pool_utilization_ratio{job="chat",instance="a",pool="hot"}', "values": "0.9x10"},
        {"series": 'pgkit_pool_utilization_ratio{job="chat",instance="a",pool="ok"}', "values": "0.8x10"},
    ], "10m", {"pool": "hot"}, None),
    "PgkitAcquireTimeouts": ([
        {"series": 'pgkit_pool_acquire_timeouts_total{job="chat",instance="a",pool="hot"}', "values": "0 0 0 1 1 1 1 1"},
        {"series": 'pgkit_pool_acquire_timeouts_total{job="chat",instance="a",pool="ok"}', "values": "0x7"},
    ], "5m", {"pool": "hot"}, None),
    "PgkitConnectionLeak": ([
        {"series": 'pgkit_pool_leaked_connections{job="chat",instance="a",pool="hot"}', "values": "1x5"},
        {"series": 'pgkit_pool_leaked_connections{job="chat",instance="a",pool="ok"}', "values": "0x5"},
    ], "3m", {"pool": "hot"}, "1"),
    # The primary down fires; all replicas down does not (reads fall back):
    # PgkitReplicaUnusable covers them.
    "PgkitDatabaseDown": ([
        {"series": 'pgkit_database_up{job="chat",instance="a",pool="hot",role="primary"}', "values": "0x5"},
        {"series": 'pgkit_database_up{job="chat",instance="a",pool="ok",role="primary"}', "values": "1x5"},
        {"series": 'pgkit_database_up{job="chat",instance="a",pool="ok",role="replica"}', "values": "0x5"},
    ], "3m", {"pool": "hot", "role": "primary"}, None),
    "PgkitReplicaUnusable": ([
        {"series": 'pgkit_replica_up{job="chat",instance="a",pool="p",replica="10.0.0.2:5432"}', "values": "0x10"},
        {"series": 'pgkit_replica_up{job="chat",instance="a",pool="p",replica="10.0.0.3:5432"}', "values": "1x10"},
    ], "6m", {"pool": "p", "replica": "10.0.0.2:5432"}, None),
    # p99 near 1s against p99 = 0.46s (90 of 100 under 0.1s, all under 0.5s).
    "PgkitQueryLatencyHigh": (
        bucket_series("hot", {"0.1": 0, "0.5": 50, "1": 100, "+Inf": 100})
        + bucket_series("ok", {"0.1": 90, "0.5": 100, "1": 100, "+Inf": 100}),
        "15m", {"pool": "hot"}, None),
    "PgkitSlowQueries": ([
        {"series": 'pgkit_slow_queries_total{job="chat",instance="a",pool="hot",name="report",op="query"}', "values": "0+1x15"},
        {"series": 'pgkit_slow_queries_total{job="chat",instance="a",pool="hot",name="fine",op="query"}', "values": "0x15"},
    ], "12m", {"pool": "hot", "name": "report"}, None),
    # 10 requests with a loop in 15 minutes fires; 9 does not.
    "PgkitNPlusOneQueries": ([
        {"series": 'pgkit_nplusone_total{job="chat",instance="a",pool="hot",name="messages_by_conversation"}', "values": "0+1x40"},
        {"series": 'pgkit_nplusone_total{job="chat",instance="a",pool="hot",name="rare"}', "values": "0+0.6x40"},
    ], "32m", {"pool": "hot", "name": "messages_by_conversation"}, "15"),
    # One change of primary in pool ha; pool steady never changed.
    "PgkitFailover": ([
        {"series": 'pgkit_failovers_total{job="chat",instance="a",pool="ha"}', "values": "0 0 0 0 1 1 1 1"},
        {"series": 'pgkit_failovers_total{job="chat",instance="a",pool="steady"}', "values": "0x7"},
    ], "6m", {"pool": "ha"}, None),
    # 20 retries per 120 transactions a minute (17%) against 12 (10%, not over),
    # and an idle pool (30 a minute, all retried) under the rate floor.
    "PgkitTransactionRetryStorm": ([
        {"series": 'pgkit_tx_total{job="chat",instance="a",pool="hot",outcome="commit"}', "values": "0+120x15"},
        {"series": 'pgkit_tx_retries_total{job="chat",instance="a",pool="hot",reason="serialization"}', "values": "0+20x15"},
        {"series": 'pgkit_tx_total{job="chat",instance="a",pool="ok",outcome="commit"}', "values": "0+120x15"},
        {"series": 'pgkit_tx_retries_total{job="chat",instance="a",pool="ok",reason="serialization"}', "values": "0+12x15"},
        {"series": 'pgkit_tx_total{job="chat",instance="a",pool="idle",outcome="commit"}', "values": "0+30x15"},
        {"series": 'pgkit_tx_retries_total{job="chat",instance="a",pool="idle",reason="deadlock"}', "values": "0+30x15"},
    ], "12m", {"pool": "hot"}, None),
    "PgkitWriterQueueFilling": ([
        {"series": 'pgkit_writer_queue_depth{job="chat",instance="a",pool="p",writer="messages"}', "values": "90x6"},
        {"series": 'pgkit_writer_queue_capacity{job="chat",instance="a",pool="p",writer="messages"}', "values": "100x6"},
        {"series": 'pgkit_writer_queue_depth{job="chat",instance="a",pool="p",writer="usage"}', "values": "80x6"},
        {"series": 'pgkit_writer_queue_capacity{job="chat",instance="a",pool="p",writer="usage"}', "values": "100x6"},
    ], "5m", {"pool": "p", "writer": "messages"}, None),
    # 60% misses and errors against 10%, and an idle cache (3 misses in 10m) under the floor.
    "PgkitCacheMissRateHigh": ([
        {"series": 'pgkit_cache_requests_total{job="chat",cache="dashboard",result="hit"}', "values": "0+4x40"},
        {"series": 'pgkit_cache_requests_total{job="chat",cache="dashboard",result="miss"}', "values": "0+3x40"},
        {"series": 'pgkit_cache_requests_total{job="chat",cache="dashboard",result="error"}', "values": "0+3x40"},
        {"series": 'pgkit_cache_requests_total{job="chat",cache="users",result="hit"}', "values": "0+90x40"},
        {"series": 'pgkit_cache_requests_total{job="chat",cache="users",result="miss"}', "values": "0+10x40"},
        {"series": 'pgkit_cache_requests_total{job="chat",cache="idle",result="miss"}', "values": "0+0.3x40"},
    ], "30m", {"cache": "dashboard"}, None),
    "PgkitCacheStoreErrors": ([
        {"series": 'pgkit_cache_store_errors_total{job="chat",cache="dashboard"}', "values": "0+3x15"},
        {"series": 'pgkit_cache_store_errors_total{job="chat",cache="users"}', "values": "0x15"},
    ], "12m", {"cache": "dashboard"}, None),
}

missing = set(rules) - set(cases)
assert not missing, f"alerts without a test: {missing}"


def render(text, labels, value):
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
    return re.sub(r"\{\{ \$value( \| humanize)? \}\}", value or "", text)


tests = []
for alert, (series, at, labels, value) in cases.items():
    rule = rules[alert]
    full = {"job": "chat", **({"instance": "a"} if "instance" in rule["expr"] else {}), **labels, **rule["labels"]}
    tests.append({
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [{
            "eval_time": at,
            "alertname": alert,
            "exp_alerts": [{
                "exp_labels": full,
                "exp_annotations": {k: render(v, full, value) for k, v in rule["annotations"].items()},
            }],
        }],
    })

out = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}
header = "# Generated by scripts/gen_alert_tests.py from alerts.yml: edit that script, then rerun it.\n"
(here / "alerts_test.yml").write_text(header + yaml.safe_dump(out, sort_keys=False, width=200, allow_unicode=True))
print(f"wrote {len(tests)} alert tests")
