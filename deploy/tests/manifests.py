"""The rendered manifests, read once: ``kubectl kustomize`` of each overlay, and helpers to
walk their workloads, containers and references."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

REPO: Final = Path(__file__).resolve().parents[2]
K8S: Final = REPO / "deploy" / "k8s"
OVERLAYS: Final = ("dev", "production")
CORE_GROUPS: Final = frozenset(
    {"v1", "apps/v1", "batch/v1", "networking.k8s.io/v1", "policy/v1", "autoscaling/v2"}
)
"""API groups that the Kubernetes schema describes; everything else is a custom resource."""

Manifest = dict[str, Any]


class RenderError(RuntimeError):
    pass


@functools.cache
def render(overlay: str) -> tuple[Manifest, ...]:
    """``kubectl kustomize deploy/k8s/overlays/<overlay>``, parsed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RenderError("kubectl is not installed (.ci/run installs it)")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {overlay} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


TOPOLOGY_KINDS: Final = (
    "Vhost",
    "User",
    "Permission",
    "TopicPermission",
    "Policy",
    "Exchange",
    "Queue",
    "Binding",
)
"""The Messaging Topology Operator's kinds the overlays use."""


def of_kind(manifests: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [item for item in manifests if item["kind"] == kind]


def named(manifests: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    found = [item for item in of_kind(manifests, kind) if item["metadata"]["name"] == name]
    if len(found) != 1:
        raise LookupError(f"{len(found)} {kind} named {name}")
    return found[0]


def pod_spec(workload: Manifest) -> dict[str, Any] | None:
    """The pod template's spec of a Deployment, Job or CronJob; None for anything else."""
    spec = workload.get("spec", {})
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    elif workload["kind"] not in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
        return None
    template: dict[str, Any] = spec["template"]["spec"]
    return template


@dataclass(frozen=True)
class Container:
    workload: Manifest
    pod: dict[str, Any]
    spec: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.workload['kind']}/{self.workload['metadata']['name']}/{self.spec['name']}"


def containers(manifests: tuple[Manifest, ...]) -> Iterator[Container]:
    for workload in manifests:
        pod = pod_spec(workload)
        if pod is None:
            continue
        for spec in [*pod.get("initContainers", []), *pod["containers"]]:
            yield Container(workload, pod, spec)


def runs(workload: Manifest) -> list[str]:
    """The command line of a workload's main container: command then args."""
    pod = pod_spec(workload)
    assert pod is not None
    container = pod["containers"][0]
    return [*container.get("command", []), *container.get("args", [])]


def config_map_data(manifests: tuple[Manifest, ...], name: str) -> dict[str, str]:
    """A ConfigMap by the name the base gives it (before kustomize's hash suffix)."""
    found = [
        item
        for item in of_kind(manifests, "ConfigMap")
        if item["metadata"]["name"].rsplit("-", 1)[0] == name
    ]
    if len(found) != 1:
        raise LookupError(f"{len(found)} ConfigMaps named {name}")
    data: dict[str, str] = found[0]["data"]
    return data


def load_yaml(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
