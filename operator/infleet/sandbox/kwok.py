"""kwok's configuration for the sandbox: Stage objects that make fake nodes Ready and pods
Running and Ready, and delete pods once they are marked for deletion.

kwok ships no stages by itself (kwokctl adds them); the sandbox runs the kwok binary directly,
so it passes these through `--config`.

**Start-up time.** A pod carrying ``infleet.io/startup-seconds`` (infleet's model pods: the
variant's ``startupSeconds``) goes Running at once but stays not-Ready, as a server loading
its weights behind a readiness probe would, and becomes Ready ``startupSeconds x scale``
seconds later (kwok's ``delay.durationFrom``, a jq expression over the pod). The scale is the
sandbox's start-up scale (``infleet sandbox startup-scale``), written into the Stage when the
configuration is generated: 0 makes such pods Ready at once. Other pods go Running and Ready
in one step, as before.
"""

from __future__ import annotations

import math
from pathlib import Path

from infleet.core.children import STARTUP_ANNOTATION
from infleet.sandbox.load_settings import read_settings, settings_path

NODE_READY = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: infleet-node-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - type: Ready
        status: "True"
        reason: KubeletReady
        message: kwok fake node is ready
        lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
      {{ range list "MemoryPressure" "DiskPressure" "PIDPressure" "NetworkUnavailable" }}
      - type: {{ . }}
        status: "False"
        reason: KwokFake
        message: kwok fake node has no {{ . }}
        lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
      {{ end }}
      addresses:
      {{ with NodeIP }}
      - type: InternalIP
        address: {{ . | Quote }}
      {{ end }}
      - type: Hostname
        address: {{ .metadata.name | Quote }}
      allocatable:
      {{ YAML .status.allocatable 1 }}
      capacity:
      {{ YAML .status.capacity 1 }}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
        kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
        containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
        kernelVersion: {{ printf "kwok-%s" Version | Quote }}
        osImage: kwok
        machineID: ""
        systemUUID: ""
        bootID: ""
      phase: Running
"""

POD_READY = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: infleet-pod-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Pending']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
    - key: '.metadata.annotations["STARTUP_ANNOTATION"]'
      operator: DoesNotExist
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
      startTime: {{ $now | Quote }}
      conditions:
      {{ range list "PodScheduled" "Initialized" "ContainersReady" "Ready" }}
      - type: {{ . }}
        status: "True"
        lastTransitionTime: {{ $now | Quote }}
      {{ end }}
      {{ range .spec.readinessGates }}
      - type: {{ .conditionType | Quote }}
        status: "True"
        lastTransitionTime: {{ $now | Quote }}
      {{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      {{ with .spec.initContainers }}
      initContainerStatuses:
      {{ range . }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            reason: Completed
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
      {{ end }}
      POD_ADDRESSES
"""

POD_START = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: infleet-pod-start
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Pending']
    - key: '.metadata.annotations["STARTUP_ANNOTATION"]'
      operator: Exists
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
      startTime: {{ $now | Quote }}
      conditions:
      {{ range list "PodScheduled" "Initialized" }}
      - type: {{ . }}
        status: "True"
        lastTransitionTime: {{ $now | Quote }}
      {{ end }}
      {{ range list "ContainersReady" "Ready" }}
      - type: {{ . }}
        status: "False"
        reason: ContainersNotReady
        message: starting up (infleet.io/startup-seconds)
        lastTransitionTime: {{ $now | Quote }}
      {{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: false
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      POD_ADDRESSES
"""

POD_STARTED = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: infleet-pod-started
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Running']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
    - key: '.metadata.annotations["STARTUP_ANNOTATION"]'
      operator: Exists
  delay:
    durationMilliseconds: 0
    durationFrom:
      expressionFrom: 'DELAY_EXPRESSION'
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      {{ range list "ContainersReady" "Ready" }}
      - type: {{ . }}
        status: "True"
        reason: ""
        message: ""
        lastTransitionTime: {{ $now | Quote }}
      {{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
"""

# PodIPWith's arguments after the node name: host network, uid, name, namespace.
_POD_IP_ARGS = (
    '( or .spec.hostNetwork false ) ( or .metadata.uid "" ) '
    '( or .metadata.name "" ) ( or .metadata.namespace "" )'
)
_POD_ADDRESSES = (
    """\
      {{ with NodeIPWith .spec.nodeName }}
      hostIP: {{ . | Quote }}
      hostIPs:
      - ip: {{ . | Quote }}
      {{ end }}
      {{ with PodIPWith .spec.nodeName POD_IP_ARGS }}
      podIP: {{ . | Quote }}
      podIPs:
      - ip: {{ . | Quote }}
      {{ end }}
"""
).replace("POD_IP_ARGS", _POD_IP_ARGS)
"""Host and pod IPs, the same for a pod that starts and one that is Ready at once."""


def _fill(template: str) -> str:
    return template.replace("      POD_ADDRESSES\n", _POD_ADDRESSES).replace(
        "STARTUP_ANNOTATION", STARTUP_ANNOTATION
    )


POD_READY = _fill(POD_READY)
POD_START = _fill(POD_START)


def delay_expression(startup_scale: float) -> str:
    """The jq expression kwok evaluates on a pod for its start-up delay: the annotation's
    seconds times ``startup_scale``, as a Go duration in whole milliseconds (``"6000ms"``)."""
    if not math.isfinite(startup_scale) or startup_scale < 0:
        raise ValueError(f"startup scale must be a finite number >= 0, got {startup_scale!r}")
    per_second = round(startup_scale * 1000.0, 6)
    return (
        f'"\\((.metadata.annotations["{STARTUP_ANNOTATION}"] | tonumber) * {per_second!r} '
        f'| floor)ms"'
    )


def pod_started_stage(startup_scale: float) -> str:
    """The Stage that makes a starting pod Ready after its scaled start-up time."""
    expression = delay_expression(startup_scale).replace("'", "''")  # YAML single quotes
    return POD_STARTED.replace("STARTUP_ANNOTATION", STARTUP_ANNOTATION).replace(
        "DELAY_EXPRESSION", expression
    )


POD_DELETE = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: infleet-pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: Exists
  next:
    delete: true
"""

OPTIONS = """\
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  # kwok's defaults (4 each) make thousands of new nodes wait in line for their first status.
  nodePlayStageParallelism: 16
  nodeLeaseParallelism: 16
  podPlayStageParallelism: 8
"""

STAGES = (NODE_READY, POD_READY, POD_START, POD_DELETE)
"""The stages that do not depend on the start-up scale."""


def config_text(startup_scale: float = 0.0) -> str:
    """The multi-document YAML given to `kwok --config`."""
    return "---\n".join((OPTIONS, *STAGES, pod_started_stage(startup_scale)))


def config_for(state_dir: Path) -> str:
    """The configuration for the sandbox in ``state_dir``, with the start-up scale of its
    engine settings (``<dir>/engine/settings.json``; 0 when unset or unreadable)."""
    try:
        scale = read_settings(settings_path(state_dir)).startup_scale
    except ValueError:
        scale = 0.0
    return config_text(scale)
