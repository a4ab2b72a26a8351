#!/usr/bin/env bash
# Every recording rule and alert of deploy/prometheus has a value on a real
# Prometheus (the Debian package) scraping the three services right after they
# start, before any traffic: a rule that is empty there (a sum over a family
# one service has no series of yet, a ratio whose numerator does not exist yet)
# records nothing, and an alert built on it can never fire.
#
# Alerts are comparisons, empty while they do not fire; each is evaluated with
# every comparison made non-filtering (`x > 0.1` becomes `x > bool 0.1`), so
# it has a value exactly when each of its operands does and `and` finds
# matching series on both sides. Also checks that Prometheus loaded both rule
# files and evaluates every rule without an error.
# Usage: prometheus_server_test.sh <event-broker> <job-worker> <webhook-delivery>
source "$(dirname "$0")/lib.sh"
BROKER_BIN=$1 WORKER_BIN=$2 WEBHOOK_BIN=$3
P="$ROOT/deploy/prometheus"
NM="$ROOT/.cache/node/node_modules"
DEADLINE=${PROMETHEUS_TEST_DEADLINE:-60}  # seconds for every expression to get a value
command -v prometheus >/dev/null || fail "prometheus missing (Debian package prometheus)"
[ -f "$NM/js-yaml/package.json" ] || fail "js-yaml missing (scripts/install-deps.sh installs it)"

# wait_until SECONDS WHAT COMMAND...: polls COMMAND until it succeeds.
wait_until() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || fail "$what (waited ${secs}s)"
    sleep 0.1
  done
}
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$1/readyz")" = 200 ]; }

start_service BROKER "$BROKER_BIN" --data_dir="$WORK/broker"
start_service WORKER "$WORKER_BIN" --broker="$BROKER_GRPC" --data_dir="$WORK/worker"
start_service HOOKS "$WEBHOOK_BIN" --broker="$BROKER_GRPC" --data_dir="$WORK/hooks"
# Ready means subscribed: the broker has both consumer groups.
wait_until 30 "job-worker not ready" ready "$WORKER_HTTP"
wait_until 30 "webhook-delivery not ready" ready "$HOOKS_HTTP"

cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - "$P/rules.yml"
  - "$P/alerts.yml"
scrape_configs:
  - job_name: event-broker
    static_configs: [{targets: ["$BROKER_HTTP"]}]
  - job_name: job-worker
    static_configs: [{targets: ["$WORKER_HTTP"]}]
  - job_name: webhook-delivery
    static_configs: [{targets: ["$HOOKS_HTTP"]}]
EOF
promtool check config "$WORK/prometheus.yml" >/dev/null || fail "generated prometheus.yml"

free_port() {
  node -e 'const s = require("net").createServer();
           s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}
prom_ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$PROM/-/ready")" = 200 ]; }
# A free port can be taken by someone else before Prometheus binds it: retry.
PROM=
for attempt in 1 2 3; do
  PROM=127.0.0.1:$(free_port)
  log="$WORK/prometheus.$attempt.log"
  (cd "$WORK" && exec prometheus --config.file="$WORK/prometheus.yml" \
    --storage.tsdb.path="$WORK/prometheus-data" --web.listen-address="$PROM") >"$log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  end=$((SECONDS + 30))
  while ! prom_ready && kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
  prom_ready && break
  if ! kill -0 "$pid" 2>/dev/null && grep -q 'address already in use' "$log" && [ $attempt -lt 3 ]; then
    continue
  fi
  cat "$log" >&2
  fail "prometheus did not start"
done
echo "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') on $PROM, scraping" \
  "event-broker $BROKER_HTTP, job-worker $WORKER_HTTP, webhook-delivery $HOOKS_HTTP"

status=0
node - "$NM" "$P" "http://$PROM" "$DEADLINE" <<'JS' || status=1
const fs = require("fs");
const path = require("path");
const [nm, dir, prom, deadlineSecs] = process.argv.slice(2);
const yaml = require(path.join(nm, "js-yaml"));
const deadline = Date.now() + Number(deadlineSecs) * 1000;
const sleep = ms => new Promise(r => setTimeout(r, ms));

// `a > 1` filters; `a > bool 1` keeps every series (value 0 or 1). Rewrites
// every comparison outside label matchers and strings.
function nonFiltering(expr) {
  let out = "", braces = 0;
  for (let i = 0; i < expr.length;) {
    const c = expr[i];
    if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < expr.length && expr[j] !== c) j += (expr[j] === "\\" && c !== "`") ? 2 : 1;
      out += expr.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    if (c === "{") braces++;
    if (c === "}") braces--;
    const op = braces === 0 && /^(==|!=|>=|<=|>|<)/.exec(expr.slice(i));
    if (op) {
      out += op[0];
      i += op[0].length;
      if (!/^\s*bool\b/.test(expr.slice(i))) out += " bool";
      continue;
    }
    out += c;
    i++;
  }
  return out;
}

const checks = [];
const ruleNames = new Set();
for (const file of ["rules.yml", "alerts.yml"]) {
  for (const g of yaml.load(fs.readFileSync(path.join(dir, file), "utf8")).groups) {
    for (const r of g.rules) {
      const expr = String(r.expr).trim();
      if (r.record) {
        checks.push({ what: `record ${r.record}`, expr });
        ruleNames.add(r.record);
      } else {
        checks.push({ what: `alert ${r.alert}`, expr: nonFiltering(expr) });
        ruleNames.add(r.alert);
      }
    }
  }
}

async function api(p) {
  const res = await fetch(prom + p);
  const body = await res.json();
  if (body.status !== "success") throw new Error(`${body.errorType}: ${body.error}`);
  return body.data;
}
const labels = m => "{" + Object.entries(m).filter(([k]) => k !== "__name__")
  .map(([k, v]) => `${k}="${v}"`).join(",") + "}";

(async () => {
  // All three targets scraped.
  for (;;) {
    const { activeTargets } = await api("/api/v1/targets?state=active");
    const down = activeTargets.filter(t => t.health !== "up");
    if (activeTargets.length === 3 && down.length === 0) break;
    if (Date.now() > deadline) {
      for (const t of down) console.log(`FAIL target ${t.labels.job} ${t.scrapeUrl}: ${t.health} ${t.lastError}`);
      process.exit(1);
    }
    await sleep(250);
  }
  // Every expression, until each has a value (rates need two scrapes,
  // alerts on recorded series a rule evaluation).
  for (let pending = checks; ;) {
    for (const c of pending) {
      try {
        const d = await api("/api/v1/query?query=" + encodeURIComponent(c.expr));
        c.error = undefined;
        if (d.resultType === "scalar") c.value = String(d.result[1]);
        else if (d.result.length) {
          c.value = d.result.slice(0, 4).map(s => `${labels(s.metric)} ${s.value[1]}`).join(", ") +
                    (d.result.length > 4 ? `, ... (${d.result.length} series)` : "");
        }
      } catch (e) {
        c.error = e.message;
      }
    }
    pending = pending.filter(c => c.value === undefined);
    if (pending.length === 0 || Date.now() > deadline) break;
    await sleep(500);
  }
  // Both rule files loaded, every rule evaluated without an error.
  let groups;
  for (;;) {
    groups = (await api("/api/v1/rules")).groups;
    const unhealthy = groups.flatMap(g => g.rules).filter(r => r.health !== "ok");
    if (unhealthy.length === 0 || Date.now() > deadline) break;
    await sleep(500);
  }

  let passed = 0, failed = 0;
  const report = (ok, line, detail) => {
    console.log(`${ok ? "PASS" : "FAIL"} ${line}`);
    if (!ok && detail) console.log(detail.replace(/^/gm, "       "));
    ok ? passed++ : failed++;
  };
  for (const c of checks) {
    if (c.value !== undefined) report(true, `${c.what}: ${c.value}`);
    else report(false, `${c.what}: ${c.error ? "error: " + c.error : "empty after " + deadlineSecs + "s"}`,
                c.expr);
  }
  const loaded = new Set(groups.flatMap(g => g.rules).map(r => r.name));
  for (const name of ruleNames) if (!loaded.has(name)) report(false, `rule ${name} not loaded by Prometheus`);
  for (const g of groups) {
    const bad = g.rules.filter(r => r.health !== "ok" || r.lastError);
    report(bad.length === 0, `rule group ${g.name} (${g.file}): ${g.rules.length} rules` +
           (bad.length ? `, unhealthy: ${bad.map(r => `${r.name} ${r.health} ${r.lastError || ""}`).join("; ")}`
                       : ", all health ok"));
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})().catch(e => { console.log(`FAIL ${e.stack}`); process.exit(1); });
JS
[ $status = 0 ] || fail "some rules or alerts have no value on a fresh mesh (see above)"
