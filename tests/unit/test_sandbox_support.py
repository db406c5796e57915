"""Sandbox support code that needs no cluster: versions file, cache key, process table,
certificates, Prometheus configuration and target registry."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from infleet.sandbox import binaries, certs, prometheus
from infleet.sandbox.processes import ProcessTable

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB=two\n", {"A": "1", "B": "two"}),
        ("# comment\n\nK8S=v1.2.3 \n", {"K8S": "v1.2.3"}),
        ("Q='quoted'\n", {"Q": "quoted"}),
    ],
)
def test_parse_env_file(text: str, expected: dict[str, str]) -> None:
    assert binaries.parse_env_file(text) == expected


def test_parse_env_file_names_the_bad_line() -> None:
    with pytest.raises(ValueError, match="line 2"):
        binaries.parse_env_file("A=1\nnot a pair\n")


def test_python_and_build_script_agree_on_the_binary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("INFLEET_SANDBOX_BIN", raising=False)
    script = subprocess.run(
        ["bash", str(REPO / "hack" / "build.sh"), "--print-dir"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert script.stdout.strip() == str(binaries.bin_dir())
    assert str(binaries.bin_dir()).startswith(str(tmp_path / "infleet" / "bin" / "v"))


def test_process_table_starts_records_and_stops(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path / "pids")
    record = table.start(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        tmp_path / "s.log",
        tmp_path,
    )
    assert table.running("sleeper") == record
    assert json.loads((tmp_path / "pids" / "sleeper.json").read_text())["pid"] == record.pid
    assert table.stop("sleeper", timeout=5) is True
    assert table.running("sleeper") is None
    assert not record.alive()
    assert table.stop("sleeper") is False  # nothing left to stop


def test_process_record_with_reused_pid_is_not_ours(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path)
    (tmp_path / "ghost.json").write_text(json.dumps({"pid": 1, "ticks": -5, "argv": ["x"]}))
    assert table.get("ghost") is not None
    assert table.running("ghost") is None  # pid 1 runs, but started at another time


def test_pki_is_complete_consistent_and_reused(tmp_path: Path) -> None:
    pki = certs.ensure_pki(tmp_path, "10.96.0.1")
    serving = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1",
        "10.96.0.1",
    ]
    admin = x509.load_pem_x509_certificate(pki.client_cert("admin").read_bytes())
    assert "O=system:masters" in admin.subject.rfc4514_string()
    # The client certificate verifies against the CA (load_cert_chain checks key and cert match).
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.client_cert("admin")), str(pki.client_key("admin")))
    before = pki.ca_cert.read_bytes()
    certs.ensure_pki(tmp_path, "10.96.0.1")
    assert pki.ca_cert.read_bytes() == before


def test_prometheus_config_has_file_sd_job_per_component(tmp_path: Path) -> None:
    config = yaml.safe_load(prometheus.config_text(tmp_path, "127.0.0.1:9090"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"prometheus", *prometheus.JOBS}
    files = jobs["infleet-engines"]["file_sd_configs"][0]["files"]
    assert files == [str(tmp_path / "infleet-engines" / "*.json")]


def test_register_targets_writes_file_sd_json(tmp_path: Path) -> None:
    path = prometheus.register_targets(
        tmp_path, "infleet-engines", "llama", ["127.0.0.1:8001"], {"model": "llama"}
    )
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:8001"], "labels": {"model": "llama"}}
    ]
    assert prometheus.write_if_changed(path, path.read_text()) is False
    prometheus.unregister_targets(tmp_path, "infleet-engines", "llama")
    assert not path.exists()
    with pytest.raises(ValueError, match="unknown scrape job"):
        prometheus.register_targets(tmp_path, "nope", "x", [])


READY = {"type": "Ready", "status": "True"}


@pytest.mark.parametrize(
    ("conditions", "taints", "usable"),
    [
        ([READY], [], True),
        ([READY], [{"key": "infleet.io/spot", "effect": "NoSchedule"}], True),  # pool's own
        ([READY], [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}], False),
        ([READY], [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}], False),
        ([{"type": "Ready", "status": "False"}], [], False),
        ([], [], False),
    ],
)
def test_a_sandbox_node_is_ready_once_schedulable(
    conditions: list[dict[str, str]], taints: list[dict[str, str]], usable: bool
) -> None:
    from infleet.sandbox.kube import _ready

    node = {"spec": {"taints": taints}, "status": {"conditions": conditions}}
    assert _ready(node) is usable
