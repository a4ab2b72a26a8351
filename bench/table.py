"""Side-by-side table of our figures and the peers' (JSON lines in, markdown out).

  table.py PEERS.jsonl OURS.jsonl            one run
  table.py --repeat P1 O1 P2 O2 ...          runs interleaved by run_all.sh --repeat N:
                                             the median of each figure and of each ratio,
                                             with the ratio's spread (min-max) over the runs
"""
import json
import statistics
import sys


def load(path):
    rows = {}
    try:
        f = open(path)
    except FileNotFoundError:  # --skip-peers without an earlier peers run
        return rows
    with f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            key = (r.get("system"), r.get("figure"), r.get("appendfsync"), r.get("replicas", 1),
                   bool(r.get("tls_auth")))
            rows[key] = r
    return rows


def figures(peers, ours):
    """The table's rows for one run, as data: (name, ours, peer, peer name, ratio, target, unit)."""
    out = []

    def peer(system, figure, fsync=None):
        return peers.get((system, figure, fsync, 1, False), {})

    def me(figure, fsync=None, replicas=1, tls_auth=False):
        return ours.get(("switchboard", figure, fsync, replicas, tls_auth), {})

    def row(name, ours_v, peer_v, peer_name, higher_better, target, unit):
        ratio = None
        if ours_v not in (None, 0) and peer_v not in (None, 0):
            ratio = ours_v / peer_v if higher_better else peer_v / ours_v
        out.append((name, ours_v, peer_v, peer_name, ratio, target, unit))


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
    rss = me("rss_stored_events_idle_subscribers").get("rss_mb")
    out.append(("RSS, 1 M stored + 1000 idle subscribers", rss, None, "", None, "≤ 256 MB", "MB"))
    return out


def fmt(v, unit):
    if v is None:
        return "n/a"
    return ("%.1f %s" if unit == "MB" else "%.0f %s") % (v, unit)


def one_run(peers_path, ours_path):
    lines = ["| figure | Switchboard | peer | peer figure | ratio | target |",
             "|---|---|---|---|---|---|"]
    for name, ours_v, peer_v, peer_name, ratio, target, unit in figures(load(peers_path),
                                                                         load(ours_path)):
        if unit == "MB":  # a bound, not a comparison
            lines.append("| %s | %s | | | | %s |" % (name, fmt(ours_v, unit), target))
            continue
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            name, fmt(ours_v, unit), fmt(peer_v, unit), peer_name,
            "n/a" if ratio is None else "%.2f×" % ratio, target))
    return lines


def median_of_runs(paths):
    """Per row: the median of our figure, of the peer's and of the ratio, and the ratio's spread."""
    runs = [figures(load(p), load(o)) for p, o in zip(paths[0::2], paths[1::2])]
    lines = ["| figure | Switchboard (median) | peer (median) | peer figure | ratio: median | "
             "ratio: min–max | runs | target |",
             "|---|---|---|---|---|---|---|---|"]
    for i, first in enumerate(runs[0]):
        name, _, _, peer_name, _, target, unit = first
        pick = lambda k: [r[i][k] for r in runs if r[i][k] is not None]
        med = lambda vs: statistics.median(vs) if vs else None
        ratios = pick(4)
        spread = "%.2f–%.2f×" % (min(ratios), max(ratios)) if ratios else "n/a"
        lines.append("| %s | %s | %s | %s | %s | %s | %d | %s |" % (
            name, fmt(med(pick(1)), unit), fmt(med(pick(2)), unit),
            peer_name, "n/a" if not ratios else "%.2f×" % med(ratios), spread, len(ratios) or
            len(pick(1)), target))
    return lines


if sys.argv[1] == "--repeat":
    print("\n".join(median_of_runs(sys.argv[2:])))
else:
    print("\n".join(one_run(sys.argv[1], sys.argv[2])))
