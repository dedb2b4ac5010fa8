// Validates prometheus-operator custom resources (ServiceMonitor, PrometheusRule, ...) against the CRD schemas
// that the npm package @kubernetes-models/prometheus-operator generates from upstream prometheus-operator.
// kubernetes-validate only bundles the built-in Kubernetes schemas, so these kinds are checked here instead.
//
//   node deploy/tools/validate-crds.mjs <dir holding node_modules/> < resources.json
// stdin: a JSON array of Kubernetes objects (tests/test_deploy_static.py renders kustomize output to it).
// Exit status 0 when every monitoring.coreos.com object validates, 1 otherwise; other objects are skipped.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const toolsDir = process.argv[2];
if (!toolsDir) {
  console.error("usage: node validate-crds.mjs <dir with node_modules/@kubernetes-models/prometheus-operator>");
  process.exit(2);
}
const pkg = join(toolsDir, "node_modules", "@kubernetes-models", "prometheus-operator");
const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
let checked = 0;
for (const obj of objects) {
  const [group, version] = String(obj.apiVersion || "").split("/");
  if (group !== "monitoring.coreos.com") continue;
  const name = `${obj.kind}/${obj.metadata?.name}`;
  let Model;
  try {
    const mod = await import(pathToFileURL(join(pkg, "monitoring.coreos.com", version, `${obj.kind}.js`)).href);
    Model = mod[obj.kind];
  } catch (err) {
    console.log(`FAIL ${name}: no schema for ${obj.apiVersion} ${obj.kind} (${err.message})`);
    failed += 1;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`ok   ${name} (${obj.apiVersion})`);
    checked += 1;
  } catch (err) {
    console.log(`FAIL ${name}: ${err.message}`);
    failed += 1;
  }
}
console.log(`${checked} valid, ${failed} invalid`);
process.exit(failed ? 1 : 0);
