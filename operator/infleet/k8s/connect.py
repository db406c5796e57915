"""An authenticated `Kube` from a kubeconfig or the pod's service account."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from infleet.core.settings import RetrySettings
from infleet.k8s.client import Kube


def connect(kubeconfig: Path | None = None, retry: RetrySettings | None = None) -> Kube:
    """A client for the cluster of ``kubeconfig``, or ``$KUBECONFIG``, or in-cluster."""
    configuration = k8s_client.Configuration()
    if (
        kubeconfig is None
        and "KUBERNETES_SERVICE_HOST" in os.environ
        and not os.environ.get("KUBECONFIG")
    ):
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None,
            client_configuration=configuration,
        )
    # One connection per thread is not enough when statuses are written in parallel.
    configuration.connection_pool_maxsize = 16
    return Kube(k8s_client.ApiClient(configuration), retry)
