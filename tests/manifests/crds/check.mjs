// Validates Prometheus Operator objects (a JSON array on stdin) against the
// operator's CRD schemas, as @kubernetes-models/prometheus-operator compiles
// them: types, patterns, enums, required fields. Unknown fields are caught
// by the TypeScript check beside it (tests/integration/manifests.rs), as the
// API server's strict field validation would. Prints one line per object
// and "N passed, N failed"; exits 1 on any failure.
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { readFileSync } from "node:fs";

const models = { PodMonitor, PrometheusRule };
const docs = JSON.parse(readFileSync(0, "utf8"));
let passed = 0;
let failed = 0;
for (const doc of docs) {
  const model = models[doc.kind];
  const name = `${doc.kind}/${doc.metadata?.name}`;
  try {
    if (!model || doc.apiVersion !== "monitoring.coreos.com/v1") {
      throw new Error(`not a monitoring.coreos.com/v1 PodMonitor or PrometheusRule: ${doc.apiVersion} ${doc.kind}`);
    }
    new model(doc).validate();
    passed += 1;
    console.log(`PASSED ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAILED ${name}: ${e.message}`);
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
