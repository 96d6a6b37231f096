// Validates custom resources against the schemas that npm's @kubernetes-models packages
// ship (generated from the operators' CRDs). Reads a JSON array of objects on stdin and
// prints a JSON array with, per object, its kind, name and error: null when valid, the
// validation message otherwise, or "no schema" for a kind no package here describes.
// Exits 0 whatever the findings: the caller judges them.
import * as externalSecrets from "@kubernetes-models/external-secrets/external-secrets.io/v1";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const MODELS = {
  "external-secrets.io/v1": externalSecrets,
  "keda.sh/v1alpha1": keda,
  "monitoring.coreos.com/v1": monitoring,
};

function check(object) {
  const Model = MODELS[object.apiVersion]?.[object.kind];
  if (!Model) {
    return "no schema";
  }
  try {
    new Model(object).validate();
    return null;
  } catch (error) {
    return String(error.message ?? error);
  }
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const results = JSON.parse(input).map((object) => ({
    kind: object.kind,
    name: object.metadata?.name,
    error: check(object),
  }));
  process.stdout.write(JSON.stringify(results));
});
