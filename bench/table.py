"""Side-by-side table of our figures and the peers' (JSON lines in, markdown out)."""
import json
import sys


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            key = (r.get("system"), r.get("figure"), r.get("appendfsync"), r.get("replicas", 1),
                   bool(r.get("tls_auth")))
            rows[key] = r
    return rows


peers = load(sys.argv[1])
ours = load(sys.argv[2])


def peer(system, figure, fsync=None):
    return peers.get((system, figure, fsync, 1, False), {})


def me(figure, fsync=None, replicas=1, tls_auth=False):
    return ours.get(("switchboard", figure, fsync, replicas, tls_auth), {})


lines = [
    "| figure | Switchboard | peer | peer figure | ratio | target |",
    "|---|---|---|---|---|---|",
]


def row(name, ours_v, peer_v, peer_name, higher_better, target, unit):
    if ours_v is None or peer_v in (None, 0):
        ratio = "n/a"
    else:
        ratio = "%.2f×" % (ours_v / peer_v if higher_better else peer_v / ours_v)
    fmt = lambda v: "n/a" if v is None else ("%.0f %s" % (v, unit))
    lines.append("| %s | %s | %s | %s | %s | %s |" % (name, fmt(ours_v), fmt(peer_v), peer_name,
                                                   ratio, target))


row("unary publish, 1 client", me("publish_unary_1client").get("msgs_per_s"),
    peer("nats-jetstream", "js_publish_sync").get("msgs_per_s"), "JetStream js_publish_sync",
    True, "≥ 1.0×", "msg/s")
row("gRPC unary floor (no storage)", me("grpc_unary_floor").get("calls_per_s"),
    peer("nats-jetstream", "js_publish_sync").get("msgs_per_s"), "JetStream js_publish_sync",
    True, "(reference)", "calls/s")
row("unary publish, 16 clients", me("publish_unary_16clients").get("msgs_per_s"),
    peer("nats-jetstream", "js_publish_sync").get("msgs_per_s"), "JetStream js_publish_sync",
    True, "(reference)", "msg/s")
row("batched publish (100/batch)", me("publish_batch_100").get("msgs_per_s"),
    peer("nats-jetstream", "js_publish_async_acked").get("msgs_per_s"),
    "JetStream async publish, acked", True, "≥ 1.0×", "msg/s")
row("group drain with acks", me("group_drain_ack").get("msgs_per_s"),
    peer("nats-jetstream", "js_consume_pull_ack_drain").get("msgs_per_s"),
    "JetStream pull drain + ack", True, "≥ 1.0×", "msg/s")
row("e2e p99 at 5000/s (broadcast)", me("e2e_latency_broadcast").get("p99_us"),
    peer("nats-jetstream", "js_e2e_latency_push").get("p99_us"), "JetStream push p99",
    False, "≤ JetStream (≥ 1.0×)", "µs")
row("e2e p99 at 5000/s (group)", me("e2e_latency_group").get("p99_us"),
    peer("nats-jetstream", "js_e2e_latency_pull").get("p99_us"), "JetStream pull p99",
    False, "(reference)", "µs")
row("e2e p50 at 5000/s (broadcast)", me("e2e_latency_broadcast").get("p50_us"),
    peer("nats-jetstream", "js_e2e_latency_push").get("p50_us"), "JetStream push p50",
    False, "(reference)", "µs")
row("job loop, 20000 no-op jobs, concurrency 50", me("job_loop_noop").get("jobs_per_s"),
    peer("bullmq", "bullmq_noop_jobs", "everysec").get("jobs_per_s"), "BullMQ no-op jobs",
    True, "≥ 2.0×", "jobs/s")
row("job loop on Redis (everysec), broker and worker", me("job_loop_noop", "everysec").get("jobs_per_s"),
    peer("bullmq", "bullmq_noop_jobs", "everysec").get("jobs_per_s"), "BullMQ no-op jobs",
    True, "≥ 2.0×", "jobs/s")
row("webhook deliveries to nginx 204 (1 KiB)", me("webhook_deliveries").get("deliveries_per_s"),
    peer("nginx+wrk", "http_post_1k_keepalive").get("req_per_s"), "wrk keep-alive req/s",
    True, "≥ 0.25×", "/s")
row("webhook latency p99 at 1000/s", me("webhook_latency").get("p99_us"), None, "",
    False, "(reference)", "µs")
for replicas in (1, 2):
    row("webhook deliveries on Redis (everysec), %d replica%s" % (replicas, "s" if replicas > 1 else ""),
        me("webhook_deliveries", "everysec", replicas).get("deliveries_per_s"),
        peer("nginx+wrk", "http_post_1k_keepalive").get("req_per_s"), "wrk keep-alive req/s",
        True, "≥ 0.25×", "/s")
    row("webhook latency p99 at 1000/s on Redis, %d replica%s" % (replicas, "s" if replicas > 1 else ""),
        me("webhook_latency", "everysec", replicas).get("p99_us"), None, "",
        False, "(reference)", "µs")
for fsync in ("everysec", "always"):
    row("Redis store (%s): batched publish" % fsync,
        me("publish_batch_100", fsync).get("msgs_per_s"),
        peer("redis-streams", "redis_xadd_pipelined", fsync).get("msgs_per_s"),
        "raw pipelined XADD", True, "≥ 0.5×", "msg/s")
    row("Redis store (%s): group drain with acks" % fsync,
        me("group_drain_ack", fsync).get("msgs_per_s"),
        peer("redis-streams", "redis_xreadgroup_xack_drain", fsync).get("msgs_per_s"),
        "raw XREADGROUP+XACK", True, "≥ 0.5×", "msg/s")
    row("Redis store (%s): e2e p99 at 5000/s (broadcast)" % fsync,
        me("e2e_latency_broadcast", fsync).get("p99_us"),
        peer("redis-streams", "redis_e2e_latency", fsync).get("p99_us"),
        "raw XADD → XREADGROUP p99", False, "(reference)", "µs")
# The cost of TLS and a bearer token, against the plain run just before it.
row("unary publish, 1 client, TLS + token", me("publish_unary_1client", tls_auth=True).get("msgs_per_s"),
    me("publish_unary_1client").get("msgs_per_s"), "Switchboard plain", True, "(reference)", "msg/s")
row("batched publish (100/batch), TLS + token", me("publish_batch_100", tls_auth=True).get("msgs_per_s"),
    me("publish_batch_100").get("msgs_per_s"), "Switchboard plain", True, "≥ 0.85×", "msg/s")
rss = me("rss_stored_events_idle_subscribers")
lines.append("| RSS, 1 M stored + 1000 idle subscribers | %s MB | | | | ≤ 256 MB |" %
             rss.get("rss_mb", "n/a"))
print("\n".join(lines))
