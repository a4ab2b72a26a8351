// Validates rendered Kubernetes manifests (a multi-document YAML file) against
// the Kubernetes schemas from npm `kubernetes-models`, plus Switchboard's own
// rules: non-root, read-only root filesystem, gRPC readiness probes, resources,
// one PodDisruptionBudget per workload, no pods scraped twice, claims that exist.
// With --redis, the rules of the scale-out overlay too (see redisChecks); with
// --redis-server, those of the bundled Redis (see redisServerChecks).
// Usage: node k8s_validate.js <node_modules> <rendered.yaml> [--redis] [--redis-server] [KIND...]
//   KIND: kinds the rendering must contain.
const path = require("path");
const fs = require("fs");
const nm = process.argv[2];
const yaml = require(path.join(nm, "js-yaml"));
const docs = yaml.loadAll(fs.readFileSync(process.argv[3], "utf8")).filter(Boolean);
const rest = process.argv.slice(4);
const redis = rest.includes("--redis");
const redisServer = rest.includes("--redis-server");
// TLS everywhere (components/tls): probes move to the plain metrics listener.
const tls = rest.includes("--tls");
const wantKinds = rest.filter((a) => !a.startsWith("--"));

const groups = {
  "v1": "v1", "apps/v1": "apps/v1", "policy/v1": "policy/v1",
  "autoscaling/v2": "autoscaling/v2", "networking.k8s.io/v1": "networking.k8s.io/v1",
};
let errors = 0;
const fail = (obj, msg) => {
  console.error(`${obj.kind}/${obj.metadata && obj.metadata.name}: ${msg}`);
  errors++;
};
const find = (kind, name) => docs.find((d) => d.kind === kind && d.metadata && d.metadata.name === name);
const workloads = docs.filter((d) => d.kind === "Deployment" || d.kind === "StatefulSet");
const podLabels = (w) => (w.spec.template.metadata || {}).labels || {};
// The bundled Redis (components/redis-server) is no Switchboard service: it
// has its own probes and port.
const isRedis = (obj) => ((obj.metadata || {}).labels || {})["app.kubernetes.io/name"] === "redis";
// A Service selector or a LabelSelector's matchLabels against pod labels
// (matchExpressions are not used here and never match).
const selects = (sel, labels) => {
  if (!sel || sel.matchExpressions) return false;
  const m = sel.matchLabels || sel;
  const keys = Object.keys(m);
  return keys.length > 0 && keys.every((k) => labels[k] === m[k]);
};

const kinds = new Set();
for (const obj of docs) {
  kinds.add(obj.kind);
  const group = groups[obj.apiVersion];
  if (group) {
    const mod = require(path.join(nm, "kubernetes-models", group));
    const Model = mod[obj.kind];
    if (!Model) { fail(obj, "unknown kind"); continue; }
    try { new Model(obj).validate(); } catch (e) { fail(obj, "schema: " + e.message); }
  } else if (obj.apiVersion === "monitoring.coreos.com/v1" && obj.kind === "ServiceMonitor") {
    if (!obj.spec || !obj.spec.selector || !(obj.spec.endpoints || []).length) fail(obj, "incomplete ServiceMonitor");
  } else {
    fail(obj, "unexpected apiVersion " + obj.apiVersion);
  }
  const pod = obj.spec && obj.spec.template && obj.spec.template.spec;
  if (pod) {
    if (!pod.terminationGracePeriodSeconds) fail(obj, "no terminationGracePeriodSeconds");
    for (const c of pod.containers) {
      const sc = c.securityContext || {};
      if (sc.readOnlyRootFilesystem !== true) fail(obj, c.name + ": root filesystem not read-only");
      if (!(sc.runAsNonRoot || (pod.securityContext || {}).runAsNonRoot)) fail(obj, c.name + ": may run as root");
      const live = c.livenessProbe || {};
      if (isRedis(obj)) {
        if (!c.readinessProbe || !c.readinessProbe.exec) fail(obj, c.name + ": readinessProbe is not redis-cli ping");
        if (!live.tcpSocket && !live.exec) fail(obj, c.name + ": no livenessProbe");
      } else {
        const ready = c.readinessProbe || {};
        if (tls) {
          // The kubelet's gRPC probe cannot speak TLS: /readyz on the plain listener.
          if (!(ready.httpGet && ready.httpGet.path === "/readyz")) fail(obj, c.name + ": readinessProbe is not GET /readyz");
        } else if (!ready.grpc) {
          fail(obj, c.name + ": readinessProbe is not a native gRPC probe");
        }
        // Liveness: gRPC health, or /healthz where gRPC health follows a
        // dependency (the broker on Redis) and must not restart the pod.
        if (!live.grpc && !(live.httpGet && live.httpGet.path === "/healthz")) {
          fail(obj, c.name + ": livenessProbe is neither a native gRPC probe nor GET /healthz");
        }
      }
      const r = c.resources || {};
      if (!r.requests || !r.limits) fail(obj, c.name + ": no resource requests/limits");
    }
    for (const v of pod.volumes || []) {
      const claim = v.persistentVolumeClaim && v.persistentVolumeClaim.claimName;
      if (claim && !find("PersistentVolumeClaim", claim)) fail(obj, `volume ${v.name}: no claim ${claim}`);
    }
  }
  if (obj.kind === "Service" && !isRedis(obj)) {
    const names = (obj.spec.ports || []).map((p) => p.name).sort().join(",");
    const want = tls && obj.spec.clusterIP !== "None" ? "grpc,http,metrics" : "grpc,http";
    if (names !== want) fail(obj, `ports must be named ${want}, got ${names}`);
  }
}
for (const w of workloads) {
  const pdbs = docs.filter((d) => d.kind === "PodDisruptionBudget" && selects(d.spec.selector, podLabels(w)));
  if (pdbs.length !== 1) {
    fail(w, `${pdbs.length} PodDisruptionBudgets select its pods (${pdbs.map((p) => p.metadata.name)}), want 1`);
  }
}
// Every pod is scraped through at most one Service the ServiceMonitors select.
for (const sm of docs.filter((d) => d.kind === "ServiceMonitor")) {
  const services = docs.filter((d) => d.kind === "Service" && selects(sm.spec.selector, d.metadata.labels || {}));
  for (const w of workloads) {
    const via = services.filter((s) => selects(s.spec.selector, podLabels(w))).map((s) => s.metadata.name);
    if (via.length > 1) fail(sm, `scrapes ${w.metadata.name} twice, through Services ${via}`);
  }
}

const HEADLESS = "event-broker-headless";
const DNS_TARGET = `--broker=dns:///${HEADLESS}:50051`;

// REDIS_URL (it holds the password) read from a Secret key that exists.
function redisUrlFromSecret(workload, c) {
  const env = (c.env || []).filter((e) => e.name === "REDIS_URL");
  const ref = env.length === 1 && env[0].valueFrom && env[0].valueFrom.secretKeyRef;
  if (!ref || env[0].value !== undefined) {
    fail(workload, "REDIS_URL must be read from a Secret (env valueFrom.secretKeyRef), not a literal");
  } else {
    const secret = find("Secret", ref.name);
    const keys = secret ? Object.keys(Object.assign({}, secret.data, secret.stringData)) : [];
    if (!keys.includes(ref.key)) fail(workload, `REDIS_URL: Secret ${ref.name} has no key ${ref.key}`);
  }
}

// The scale-out overlay: broker replicas on one Redis, clients on the
// headless Service, job-workers sharing their job store on the same Redis.
function redisChecks() {
  if (find("StatefulSet", "event-broker")) fail(find("StatefulSet", "event-broker"), "the broker must be a Deployment");
  const broker = find("Deployment", "event-broker");
  if (!broker) { console.error("redis: no Deployment/event-broker"); errors++; return; }
  if (!(broker.spec.replicas >= 2)) fail(broker, `replicas ${broker.spec.replicas}, want >= 2 (scale-out)`);
  const pod = broker.spec.template.spec;
  const c = pod.containers.find((x) => x.name === "event-broker") || pod.containers[0];
  const args = c.args || [];
  if (args.some((a) => a.startsWith("--store"))) fail(broker, "--store in args: the store comes from REDIS_URL");
  for (const a of args.filter((x) => x.startsWith("--sync="))) {
    if (!["--sync=normal", "--sync=replicated"].includes(a)) fail(broker, a + " is not a sync policy of the Redis store");
  }
  redisUrlFromSecret(broker, c);
  for (const cm of docs.filter((d) => d.kind === "ConfigMap")) {
    if ("REDIS_URL" in (cm.data || {})) fail(cm, "REDIS_URL (holds the password) belongs in a Secret");
  }
  if (c.livenessProbe && c.livenessProbe.grpc) {
    fail(broker, "livenessProbe on gRPC health: it says NOT_SERVING while Redis is down, every broker would restart");
  }
  if ((pod.volumes || []).some((v) => v.persistentVolumeClaim) || broker.spec.volumeClaimTemplates) {
    fail(broker, "the broker keeps no data of its own on Redis: no claims");
  }

  const svc = find("Service", HEADLESS);
  if (!svc) { console.error(`redis: no Service/${HEADLESS}`); errors++; return; }
  if (svc.spec.clusterIP !== "None") fail(svc, `clusterIP ${svc.spec.clusterIP}, want None (headless)`);
  if (svc.spec.publishNotReadyAddresses) fail(svc, "publishNotReadyAddresses: clients would reach brokers without Redis");
  if (!selects(svc.spec.selector, podLabels(broker))) fail(svc, "does not select the broker pods");
  for (const w of workloads.filter((x) => x !== broker)) {
    if (selects(svc.spec.selector, podLabels(w))) fail(svc, "also selects " + w.metadata.name);
  }
  if (!(svc.spec.ports || []).some((p) => p.port === 50051 && p.name === "grpc")) fail(svc, "no grpc port 50051");
  if (!find("Service", "event-broker")) { console.error("redis: no Service/event-broker"); errors++; }

  for (const name of ["job-worker", "webhook-delivery"]) {
    const d = find("Deployment", name);
    if (!d) { console.error(`redis: no Deployment/${name}`); errors++; continue; }
    const cargs = d.spec.template.spec.containers[0].args || [];
    const brokerArgs = cargs.filter((a) => a.startsWith("--broker="));
    if (brokerArgs.length !== 1 || brokerArgs[0] !== DNS_TARGET) {
      fail(d, `broker target ${JSON.stringify(brokerArgs)}, want ["${DNS_TARGET}"]`);
    }
  }
  // The services that keep their state on the same Redis: replicas share
  // it, so they scale out and roll without stopping.
  for (const name of ["job-worker", "webhook-delivery"]) {
    const d = find("Deployment", name);
    if (!d) continue;
    const dc = d.spec.template.spec.containers[0];
    redisUrlFromSecret(d, dc);
    if ((dc.args || []).some((a) => a.startsWith("--store"))) fail(d, "--store in args: the store comes from REDIS_URL");
    if (!(d.spec.replicas >= 2)) fail(d, `replicas ${d.spec.replicas}, want >= 2 (scale-out)`);
    if ((d.spec.strategy || {}).type === "Recreate") fail(d, "strategy Recreate: a rollout would stop every replica at once");
    if ((d.spec.template.spec.volumes || []).some((v) => v.persistentVolumeClaim)) {
      fail(d, "a claim: its state is on Redis, and a ReadWriteOnce claim pins every replica to one node");
    }
    const hpa = find("HorizontalPodAutoscaler", name);
    if (!hpa || !(hpa.spec.minReplicas >= 2)) fail(d, "its HorizontalPodAutoscaler must keep minReplicas >= 2");
  }
}
if (redis) redisChecks();

// The file a --FLAG=/path arg names: it must be a key of a Secret mounted at
// the path's directory.
function fileFromSecret(workload, c, flag) {
  const arg = (c.args || []).find((a) => a.startsWith(`--${flag}=`));
  if (!arg) { fail(workload, `no --${flag}`); return; }
  const file = arg.slice(flag.length + 3);
  const dir = file.slice(0, file.lastIndexOf("/"));
  const key = file.slice(file.lastIndexOf("/") + 1);
  const mount = (c.volumeMounts || []).find((m) => m.mountPath === dir);
  const vol = mount && (workload.spec.template.spec.volumes || []).find((v) => v.name === mount.name);
  if (!vol || !vol.secret) { fail(workload, `--${flag}: ${dir} is not a mounted Secret`); return; }
  const secret = find("Secret", vol.secret.secretName);
  const keys = secret ? Object.keys(Object.assign({}, secret.data, secret.stringData)) : [];
  if (!keys.includes(key)) fail(workload, `--${flag}: Secret ${vol.secret.secretName} has no key ${key}`);
  if (mount.readOnly !== true) fail(workload, `--${flag}: the Secret must be mounted readOnly`);
}

// Tokens on (components/auth): every service reads its principals from a
// Secret, the mesh clients present a token from it; no token in a ConfigMap.
function authChecks() {
  for (const name of ["event-broker", "job-worker", "webhook-delivery"]) {
    const w = find("Deployment", name) || find("StatefulSet", name);
    if (!w) continue;
    const c = w.spec.template.spec.containers[0];
    fileFromSecret(w, c, "auth_tokens_file");
    if (name !== "event-broker") fileFromSecret(w, c, "broker_token_file");
  }
  for (const cm of docs.filter((d) => d.kind === "ConfigMap")) {
    for (const k of Object.keys(cm.data || {})) {
      if (/token/i.test(k)) fail(cm, `${k}: tokens belong in a Secret`);
    }
  }
}
if (redis) authChecks();

// TLS everywhere: certificates from a mounted Secret, mTLS, the mesh clients
// presenting theirs, probes and scrapes on the plain --metrics_addr port.
function tlsChecks() {
  for (const name of ["event-broker", "job-worker", "webhook-delivery"]) {
    const w = find("Deployment", name) || find("StatefulSet", name);
    if (!w) { console.error(`tls: no workload ${name}`); errors++; continue; }
    const c = w.spec.template.spec.containers[0];
    for (const flag of ["tls_cert", "tls_key", "tls_client_ca"]) fileFromSecret(w, c, flag);
    if (name !== "event-broker") {
      for (const flag of ["broker_tls_ca", "broker_tls_cert", "broker_tls_key"]) fileFromSecret(w, c, flag);
    }
    const arg = (c.args || []).find((a) => a.startsWith("--metrics_addr="));
    const port = arg ? Number(arg.slice(arg.lastIndexOf(":") + 1)) : NaN;
    const named = (c.ports || []).find((p) => p.containerPort === port);
    if (!named) { fail(w, "--metrics_addr: no containerPort for it"); continue; }
    for (const probe of [c.readinessProbe, c.livenessProbe]) {
      const target = probe && probe.httpGet && probe.httpGet.port;
      if (target !== named.name && target !== port) fail(w, `a probe is not on the metrics port (${named.name})`);
    }
    const ann = (w.spec.template.metadata.annotations || {})["prometheus.io/port"];
    if (ann !== String(port)) fail(w, `prometheus.io/port ${ann}, want ${port} (the admin port needs a certificate)`);
  }
  for (const sm of docs.filter((d) => d.kind === "ServiceMonitor")) {
    if ((sm.spec.endpoints || []).some((e) => e.port !== "metrics")) fail(sm, "scrapes a port other than metrics");
  }
}
if (tls) tlsChecks();

// The broker's console reaches job-worker and webhook-delivery: its address
// flags (args, env or the ConfigMap it reads) name a Service that selects
// those pods and has that port; with TLS it presents the mesh certificate.
function consoleChecks() {
  const w = find("Deployment", "event-broker") || find("StatefulSet", "event-broker");
  if (!w) return;
  const c = w.spec.template.spec.containers[0];
  const flagValue = (flag) => {
    const arg = (c.args || []).find((a) => a.startsWith(`--${flag}=`));
    if (arg) return arg.slice(flag.length + 3);
    const env = "SWITCHBOARD_" + flag.toUpperCase();
    const e = (c.env || []).find((v) => v.name === env);
    if (e) return e.value;
    for (const from of c.envFrom || []) {
      const cm = from.configMapRef && find("ConfigMap", from.configMapRef.name);
      if (cm && cm.data && cm.data[env] !== undefined) return cm.data[env];
    }
    return undefined;
  };
  for (const [flag, target] of [["console_jobs_addr", "job-worker"], ["console_webhooks_addr", "webhook-delivery"]]) {
    const addr = flagValue(flag);
    if (!addr) { fail(w, `no --${flag}: the console's ${target} view is off`); continue; }
    const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];
    const svc = find("Service", host);
    const pods = find("Deployment", target) || find("StatefulSet", target);
    if (!svc) { fail(w, `--${flag}=${addr}: no Service ${host}`); continue; }
    if (!pods || !selects(svc.spec.selector, podLabels(pods))) fail(w, `--${flag}=${addr}: Service ${host} does not select ${target}`);
    if (!(svc.spec.ports || []).some((p) => p.port === port && p.name === "grpc")) {
      fail(w, `--${flag}=${addr}: Service ${host} has no gRPC port ${port}`);
    }
  }
  if (tls) for (const flag of ["console_tls_ca", "console_tls_cert", "console_tls_key"]) fileFromSecret(w, c, flag);
}
consoleChecks();

// The bundled Redis: durable (AOF fsynced on every write, on a claim), never
// evicting, with the password of the Secret REDIS_URL also carries.
function redisServerChecks() {
  const sts = find("StatefulSet", "redis");
  if (!sts) { console.error("redis-server: no StatefulSet/redis"); errors++; return; }
  const c = sts.spec.template.spec.containers[0];
  const args = (c.args || []).join(" ");
  const want = {"--appendonly": "yes", "--appendfsync": "always", "--maxmemory-policy": "noeviction"};
  for (const [flag, value] of Object.entries(want)) {
    if (!args.includes(`${flag} ${value}`)) fail(sts, `wants ${flag} ${value} (got: ${args})`);
  }
  const claims = (sts.spec.volumeClaimTemplates || []).map((t) => t.metadata.name);
  const mount = (c.volumeMounts || []).find((m) => m.mountPath === "/data");
  if (!mount || !claims.includes(mount.name)) fail(sts, "/data (the append-only file) must be on a claim");
  const pw = (c.env || []).find((e) => e.name === "REDIS_PASSWORD");
  if (!args.includes("--requirepass $(REDIS_PASSWORD)") || !pw || !pw.valueFrom || !pw.valueFrom.secretKeyRef) {
    fail(sts, "the password must come from the Secret (--requirepass $(REDIS_PASSWORD))");
  }
  if (!find("Service", "redis")) { console.error("redis-server: no Service/redis"); errors++; }
  const secret = find("Secret", "switchboard-credentials");
  const data = secret ? Object.assign({}, secret.stringData) : {};
  let url = null;
  try { url = new URL(data.REDIS_URL); } catch (e) { /* reported below */ }
  if (!url || url.hostname !== "redis") {
    fail(secret || sts, `REDIS_URL ${url ? url.hostname : "(unparsable)"} does not point at the bundled Service redis`);
  } else if (decodeURIComponent(url.password) !== data.REDIS_PASSWORD) {
    fail(secret, "REDIS_URL and REDIS_PASSWORD hold different passwords");
  }
}
if (redisServer) redisServerChecks();

for (const k of wantKinds) {
  if (!kinds.has(k)) { console.error("missing kind " + k); errors++; }
}
console.log(`${docs.length} objects, ${errors} problems`);
process.exit(errors ? 1 : 0);
