"""Schema validation of rendered objects: the Kubernetes schema (``kubernetes-validate``,
strict) for core objects, the operators' published schemas (npm ``@kubernetes-models``)
for custom resources."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from typing import Final

import kubernetes_validate
from kubernetes_validate.utils import latest_version

from deploy.tests.manifests import REPO, Manifest

CRD_SCHEMAS: Final = REPO / "deploy" / "tests" / "crd-schemas"
NO_SCHEMA: Final = "no schema"
KUBERNETES_VERSION: Final = latest_version()
"""The newest Kubernetes release whose schema kubernetes-validate ships."""


def kubernetes_errors(manifest: Manifest) -> str | None:
    """None when the object is valid for KUBERNETES_VERSION with unknown fields refused."""
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{error.message} at {'/'.join(map(str, error.path))}"
    return None


@functools.cache
def _crd_validator() -> str:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError("Node.js and npm are needed (.ci/run installs them)")
    if not (CRD_SCHEMAS / "node_modules").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CRD_SCHEMAS,
            check=True,
            capture_output=True,
            timeout=600,
        )
    return node


def operator_schema_errors(manifests: list[Manifest]) -> list[str | None]:
    """Per object: None when valid, NO_SCHEMA when no package describes it, else the error."""
    result = subprocess.run(
        [_crd_validator(), str(CRD_SCHEMAS / "validate.mjs")],
        input=json.dumps(manifests),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [entry["error"] for entry in json.loads(result.stdout)]
