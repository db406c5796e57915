"""e2e fixtures: an API client for the session's cluster, a namespace per test, and waits."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client, config
from operator_process import apply_e2e_pools

T = TypeVar("T")


class Kube:
    """Typed API groups plus the waits the e2e tests share."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)

    @staticmethod
    def wait_for(
        what: str, probe: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.5
    ) -> T:
        """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    def pods(self, namespace: str, selector: str) -> list[client.V1Pod]:
        """Pods of a label selector."""
        return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)

    def events_for(self, namespace: str, name: str) -> list[client.CoreV1Event]:
        """Events about one object."""
        selector = f"involvedObject.name={name}"
        return list(self.core.list_namespaced_event(namespace, field_selector=selector).items)

    def node_labels(self, name: str) -> dict[str, str]:
        """Labels of a node."""
        node = self.core.read_node(name)
        return dict((node.metadata.labels if node.metadata else None) or {})


@pytest.fixture(scope="session")
def kube(cluster: Any) -> Kube:
    """API access to the session's cluster."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
    return Kube(client.ApiClient(configuration))


@pytest.fixture(scope="module")
def pools(cluster: Any) -> None:
    """The e2e pools as AcceleratorPool objects (the sandbox made only their nodes)."""
    apply_e2e_pools(cluster)


@pytest.fixture
def custom(kube: Kube) -> client.CustomObjectsApi:
    """The custom-objects API of the session's cluster (ModelDeployments, pools)."""
    return client.CustomObjectsApi(kube.api)


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of the test's own, deleted afterwards (without waiting)."""
    stem = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower().removeprefix("test_"))[:40]
    name = f"{stem.strip('-')}-{uuid.uuid4().hex[:6]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    kube.core.delete_namespace(name)


def _deployment(
    name: str,
    replicas: int,
    resource: str,
    amount: int,
    node_selector: dict[str, str],
    tolerations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Deployment manifest whose pods each request `amount` of `resource`."""
    limits = {resource: str(amount)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": node_selector,
                    "tolerations": tolerations or [],
                    "containers": [
                        {
                            "name": "server",
                            "image": "registry.invalid/fake-llm-server:1",
                            "resources": {
                                "requests": {"cpu": "1", **limits},
                                "limits": limits,
                            },
                        }
                    ],
                },
            },
        },
    }


@pytest.fixture
def make_deployment() -> Callable[..., dict[str, Any]]:
    """The Deployment manifest builder (a fixture, since test modules cannot import conftest)."""
    return _deployment
