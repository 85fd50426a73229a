"""Prometheus metrics. Labels are channel keys and rule ids: bounded by the config, never by traffic."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

POSTS_INGESTED = Counter("tgsentinel_posts_ingested_total", "Posts stored (new)", ["channel"])
POSTS_RECOVERED = Counter(
    "tgsentinel_posts_recovered_total", "Posts found by catch-up sweeps rather than live updates", ["channel"]
)
POSTS_REJECTED = Counter(
    "tgsentinel_posts_rejected_total",
    "Posts skipped because they could not be parsed or stored (each kept in rejected_posts)",
    ["reason"],  # bad_id, id_range, out_of_sequence, unparsable, store_failed
)
POSTS_DROPPED = Counter(
    "tgsentinel_posts_dropped_total",
    "Input a source read and did not pass on, as expected",
    ["reason"],  # behind_cursor, duplicate, empty_page
)
MATCHES = Counter("tgsentinel_matches_total", "Rule matches recorded", ["rule"])
REGEX_SKIPPED = Counter(
    "tgsentinel_regex_skipped_total",
    "Regex terms not run on a post (and counted as no hit)",
    ["reason"],  # post_budget, batch_budget, disabled
)
REGEX_TIMEOUTS = Counter("tgsentinel_regex_timeouts_total", "Regex terms stopped at their timeout")
REGEX_DISABLED = Counter(
    "tgsentinel_regex_disabled_total", "Regex terms disabled for timing out (each until the rules reload)"
)
ALERTS_SUPPRESSED = Counter(
    "tgsentinel_alerts_suppressed_total",
    "Matches that did not page anyone, by the filter that held them back",
    ["reason"],  # baseline, stale, silenced, duplicate, throttled
)
DELIVERIES = Counter("tgsentinel_deliveries_total", "Delivery outcomes", ["destination", "status"])
FLOOD_WAIT_SECONDS = Counter("tgsentinel_flood_wait_seconds_total", "Seconds spent in Telegram FloodWaits")
GAPS = Counter("tgsentinel_gaps_total", "Gaps a catch-up could not close", ["channel"])
CHANNEL_PROBLEMS = Gauge(
    "tgsentinel_channel_problems",
    "1 for a channel that cannot be watched until the rules change (no such channel, not public, private)",
    ["channel", "kind"],
)
SOURCE_CONNECTED = Gauge(
    "tgsentinel_source_connected", "1 while a source reaches its service (t.me, Telegram), else 0", ["source"]
)
LOOP_LAG = Gauge("tgsentinel_event_loop_lag_seconds", "How late the event loop ran a timer")
STORE_FAILURES = Gauge(
    "tgsentinel_store_failures", "Store operations failed in a row because the store was unavailable"
)
DB_SIZE = Gauge("tgsentinel_database_size_bytes", "Size of the database")
DELIVERY_LATENCY = Histogram(
    "tgsentinel_delivery_latency_seconds",
    "From ingest to a destination's acceptance",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
LEASES_HELD = Gauge(
    "tgsentinel_leases_held", "Channel leases this source worker holds (PostgreSQL scale-out)"
)
LEASE_TAKEOVERS = Counter(
    "tgsentinel_lease_takeovers_total", "Channels claimed after another worker's lease on them ran out"
)
LEASE_RENEWAL_FAILURES = Counter(
    "tgsentinel_lease_renewal_failures_total", "Lease rounds that failed (the store unavailable or refusing)"
)
LEASE_ROUND_SECONDS = Gauge(
    "tgsentinel_lease_round_seconds", "How long this worker's last lease round took in the store"
)
