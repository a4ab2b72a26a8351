// Validates rendered Kubernetes manifests (a multi-document YAML file) against
// the Kubernetes schemas from npm `kubernetes-models`, plus Switchboard's own
// rules: non-root, read-only root filesystem, native gRPC probes, resources.
// Usage: node k8s_validate.js <node_modules> <rendered.yaml>
const path = require("path");
const fs = require("fs");
const nm = process.argv[2];
const yaml = require(path.join(nm, "js-yaml"));
const docs = yaml.loadAll(fs.readFileSync(process.argv[3], "utf8")).filter(Boolean);

const groups = {
  "v1": "v1", "apps/v1": "apps/v1", "policy/v1": "policy/v1",
  "autoscaling/v2": "autoscaling/v2", "networking.k8s.io/v1": "networking.k8s.io/v1",
};
let errors = 0;
const fail = (obj, msg) => {
  console.error(`${obj.kind}/${obj.metadata && obj.metadata.name}: ${msg}`);
  errors++;
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
      for (const p of ["livenessProbe", "readinessProbe"]) {
        if (!c[p] || !c[p].grpc) fail(obj, c.name + ": " + p + " is not a native gRPC probe");
      }
      const r = c.resources || {};
      if (!r.requests || !r.limits) fail(obj, c.name + ": no resource requests/limits");
    }
  }
  if (obj.kind === "Service") {
    const names = (obj.spec.ports || []).map((p) => p.name).sort().join(",");
    if (names !== "grpc,http") fail(obj, "ports must be named grpc and http, got " + names);
  }
}
for (const k of process.argv.slice(4)) {
  if (!kinds.has(k)) { console.error("missing kind " + k); errors++; }
}
console.log(`${docs.length} objects, ${errors} problems`);
process.exit(errors ? 1 : 0);
