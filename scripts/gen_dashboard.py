#!/usr/bin/env python3
"""Writes examples/monitoring/grafana-dashboard.json, an importable Grafana
dashboard over pgkit's metrics. Edit here, then rerun:
    python3 scripts/gen_dashboard.py
"""
import json
import pathlib

out = pathlib.Path(__file__).resolve().parent.parent / "examples" / "monitoring" / "grafana-dashboard.json"
SEL = 'job=~"$job", pool=~"$pool"'
panels = []


def panel(title, exprs, unit="short", w=12, h=8, kind="timeseries", desc="", legend=None, max_=None):
    pid = len(panels) + 1
    targets = [{"refId": chr(65 + i), "expr": e, "legendFormat": (legend[i] if legend else "")} for i, e in enumerate(exprs)]
    field = {"unit": unit}
    if max_ is not None:
        field["max"] = max_
    panels.append({
        "id": pid, "type": kind, "title": title, "description": desc,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": h, "w": w, "x": (pid - 1) % 2 * 12, "y": (pid - 1) // 2 * h},
        "fieldConfig": {"defaults": field, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": targets,
    })


panel("Pool utilization", [f"max by (pool, role) (pgkit_pool_utilization_ratio{{{SEL}}})"], unit="percentunit", max_=1,
      desc="Acquired connections / MaxConns. The PgkitPoolSaturated alert fires above 0.8 for 5m.", legend=["{{pool}} {{role}}"])
panel("Connections by state", [
    f"sum by (pool, role) (pgkit_pool_acquired_connections{{{SEL}}})",
    f"sum by (pool, role) (pgkit_pool_idle_connections{{{SEL}}})",
    f"sum by (pool, role) (pgkit_pool_constructing_connections{{{SEL}}})",
    f"sum by (pool, role) (pgkit_pool_max_connections{{{SEL}}})",
], legend=["acquired {{pool}} {{role}}", "idle {{pool}} {{role}}", "constructing {{pool}} {{role}}", "max {{pool}} {{role}}"])
panel("Acquire wait p50 / p99", [
    f"histogram_quantile(0.5, sum by (pool, role, le) (rate(pgkit_pool_acquire_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
    f"histogram_quantile(0.99, sum by (pool, role, le) (rate(pgkit_pool_acquire_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
], unit="s", legend=["p50 {{pool}} {{role}}", "p99 {{pool}} {{role}}"])
panel("Callers waiting for a connection, and acquire timeouts", [
    f"sum by (pool, role) (pgkit_pool_waiting{{{SEL}}})",
    f"sum by (pool, role) (rate(pgkit_pool_acquire_timeouts_total{{{SEL}}}[$__rate_interval]))",
], legend=["waiting {{pool}} {{role}}", "timeouts/s {{pool}} {{role}}"])
panel("Query rate by name", [f"sum by (name) (rate(pgkit_query_duration_seconds_count{{{SEL}}}[$__rate_interval]))"],
      unit="reqps", legend=["{{name}}"])
panel("Query latency p50 / p95 / p99 by name", [
    f"histogram_quantile({q}, sum by (name, le) (rate(pgkit_query_duration_seconds_bucket{{{SEL}, outcome=\"ok\"}}[$__rate_interval])))"
    for q in ("0.5", "0.95", "0.99")
], unit="s", legend=["p50 {{name}}", "p95 {{name}}", "p99 {{name}}"])
panel("Slow queries per second", [f"sum by (name) (rate(pgkit_slow_queries_total{{{SEL}}}[$__rate_interval]))"],
      unit="reqps", legend=["{{name}}"], desc="Statements slower than Config.SlowQueryThreshold (500ms by default).")
panel("N+1 query loops", [f"sum by (name) (increase(pgkit_nplusone_total{{{SEL}}}[$__rate_interval]))"],
      legend=["{{name}}"], desc="Requests in which one statement ran more than Config.NPlusOneThreshold times (10 by default); the log names the line.")
panel("Errors by SQLSTATE class", [f"sum by (sqlstate_class) (rate(pgkit_query_errors_total{{{SEL}}}[$__rate_interval]))"],
      unit="reqps", legend=["{{sqlstate_class}}"], desc="23: integrity violations; 40: transaction rollbacks; 08: connection; client: no SQLSTATE.")
panel("Transactions and retries", [
    f"sum by (outcome) (rate(pgkit_tx_total{{{SEL}}}[$__rate_interval]))",
    f"sum by (reason) (rate(pgkit_tx_retries_total{{{SEL}}}[$__rate_interval]))",
], unit="reqps", legend=["{{outcome}}", "retry: {{reason}}"])
panel("Writer queue depth", [
    f"sum by (writer) (pgkit_writer_queue_depth{{{SEL}}})",
    f"sum by (writer) (pgkit_writer_queue_capacity{{{SEL}}})",
], legend=["depth {{writer}}", "capacity {{writer}}"])
panel("Writer throughput", [f"sum by (writer, outcome) (rate(pgkit_writer_items_total{{{SEL}}}[$__rate_interval]))"],
      legend=["{{writer}} {{outcome}}"])
panel("Cache hit ratio by cache", [
    'sum by (cache) (rate(pgkit_cache_requests_total{job=~"$job", result="hit"}[$__rate_interval]))'
    ' / sum by (cache) (rate(pgkit_cache_requests_total{job=~"$job"}[$__rate_interval]))'
], unit="percentunit", max_=1, legend=["{{cache}}"])
panel("Database up", [f"min by (pool, role) (pgkit_database_up{{{SEL}}})"], kind="stat", legend=["{{pool}} {{role}}"],
      desc="1: the health check at scrape time reached the server (up or degraded); 0: down.")
panel("Replica lag", [f"max by (pool, replica) (pgkit_replica_lag_seconds{{{SEL}}})"], unit="s", legend=["{{replica}}"],
      desc="Replay lag of each of Config.ReplicaURLs at its latest check; above MaxReplicaLag (10s by default) reads skip it.")
panel("Failovers and the primary", [
    f"sum by (pool) (increase(pgkit_failovers_total{{{SEL}}}[$__rate_interval]))",
    f"max by (pool, addr) (pgkit_primary_info{{{SEL}}})"],
    legend=["failovers {{pool}}", "primary {{addr}}"],
    desc="Changes of the primary's address seen by new connections (a failover or switchover through a multi-host URL), and which address is the primary now.")
panel("Transaction attempts p99", [
    f"histogram_quantile(0.99, sum by (pool, le) (rate(pgkit_tx_attempts_bucket{{{SEL}}}[$__rate_interval])))"], legend=["{{pool}}"])

dashboard = {
    "title": "pgkit",
    "uid": "pgkit",
    "description": "pgkit pools, queries, transactions, writers and caches. Generated by scripts/gen_dashboard.py.",
    "tags": ["pgkit", "postgresql"],
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "time": {"from": "now-1h", "to": "now"},
    "refresh": "30s",
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
        {"name": "job", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": "label_values(pgkit_pool_max_connections, job)", "includeAll": True, "multi": True, "current": {"text": "All", "value": "$__all"}},
        {"name": "pool", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": 'label_values(pgkit_pool_max_connections{job=~"$job"}, pool)', "includeAll": True, "multi": True, "current": {"text": "All", "value": "$__all"}},
    ]},
    "panels": panels,
}
out.write_text(json.dumps(dashboard, indent=2) + "\n")
print(f"wrote {len(panels)} panels")
