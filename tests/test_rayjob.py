"""rayjob.yaml: a KubeRay RayJob whose fields are the RayJob CRD's (ray.io/v1), whose pod
templates pass Kubernetes' own Pod schema (kubernetes-validate, offline), and whose
worker groups, Ray version and entrypoint match cluster.yaml, constraints.txt and the CLI."""

from __future__ import annotations

import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from falconer_ray.cli.main import app
from falconer_ray.cli.upload import pop_upload

ROOT = Path(__file__).resolve().parents[1]
JOB = yaml.safe_load((ROOT / "rayjob.yaml").read_text())
CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())

# The RayJob CRD's fields (ray.io/v1) at the paths the manifest uses: the keys each object
# may hold, and those it must. Read from KubeRay's CRD; fields only newer operators know
# are left out, so the manifest works with older ones too.
FIELDS = {
    "spec": ({"activeDeadlineSeconds", "clusterSelector", "entrypoint", "entrypointNumCpus", "entrypointNumGpus",
              "entrypointResources", "jobId", "metadata", "rayClusterSpec", "runtimeEnvYAML",
              "shutdownAfterJobFinishes", "submissionMode", "submitterPodTemplate", "suspend",
              "ttlSecondsAfterFinished"}, {"entrypoint"}),
    "rayClusterSpec": ({"autoscalerOptions", "enableInTreeAutoscaling", "headGroupSpec", "headServiceAnnotations",
                        "rayVersion", "suspend", "workerGroupSpecs"}, {"headGroupSpec"}),
    "headGroupSpec": ({"enableIngress", "headService", "rayStartParams", "serviceType", "template"},
                      {"rayStartParams", "template"}),
    "workerGroupSpec": ({"groupName", "maxReplicas", "minReplicas", "numOfHosts", "rayStartParams", "replicas",
                         "scaleStrategy", "template"}, {"groupName", "maxReplicas", "minReplicas", "rayStartParams",
                                                        "template"}),
    "autoscalerOptions": ({"env", "envFrom", "idleTimeoutSeconds", "image", "imagePullPolicy", "resources",
                           "securityContext", "upscalingMode", "volumeMounts"}, set()),
    "template": ({"metadata", "spec"}, set()),
}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
UPSCALING_MODES = {"Default", "Aggressive", "Conservative"}
GROUPS = {"cpu-workers": "cpu_workers", "gpu-workers": "gpu_workers", "llm-workers": "llm_workers"}


def check(obj: dict, kind: str, where: str) -> None:
    allowed, required = FIELDS[kind]
    assert set(obj) <= allowed, f"{where}: not a RayJob field: {sorted(set(obj) - allowed)}"
    assert required <= set(obj), f"{where}: missing {sorted(required - set(obj))}"


def groups() -> list[tuple[str, dict]]:
    spec = JOB["spec"]["rayClusterSpec"]
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]


def test_every_field_is_a_rayjob_field():
    assert JOB["apiVersion"] == "ray.io/v1" and JOB["kind"] == "RayJob" and JOB["metadata"]["name"]
    spec = JOB["spec"]
    check(spec, "spec", "spec")
    assert spec["submissionMode"] in SUBMISSION_MODES
    cluster = spec["rayClusterSpec"]
    check(cluster, "rayClusterSpec", "spec.rayClusterSpec")
    check(cluster["autoscalerOptions"], "autoscalerOptions", "autoscalerOptions")
    assert cluster["autoscalerOptions"]["upscalingMode"] in UPSCALING_MODES
    check(cluster["headGroupSpec"], "headGroupSpec", "headGroupSpec")
    for group in cluster["workerGroupSpecs"]:
        check(group, "workerGroupSpec", group.get("groupName", "a worker group"))
        assert all(isinstance(group[k], int) for k in ("replicas", "minReplicas", "maxReplicas"))
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for name, group in groups():
        check(group["template"], "template", f"{name}.template")
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), name  # a map of strings


@pytest.mark.parametrize("name", [name for name, _ in groups()])
def test_pod_templates_pass_the_kubernetes_pod_schema(name):
    template = dict(groups())[name]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **template.get("metadata", {})},
           "spec": template["spec"]}
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)


def test_it_is_the_cluster_of_cluster_yaml():
    types = CLUSTER["available_node_types"]
    cluster = JOB["spec"]["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] == 60 * CLUSTER["idle_timeout_minutes"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0" == str(types["head"]["resources"]["CPU"])
    assert {g["groupName"] for g in cluster["workerGroupSpecs"]} == set(GROUPS)
    for group in cluster["workerGroupSpecs"]:
        node = types[GROUPS[group["groupName"]]]
        assert (group["minReplicas"], group["maxReplicas"]) == (node["min_workers"], node["max_workers"])
        requests = group["template"]["spec"]["containers"][0]["resources"]["requests"]
        assert float(requests["cpu"]) == node["resources"]["CPU"]
        assert float(requests.get("nvidia.com/gpu", 0)) == node["resources"].get("GPU", 0)
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert cluster["rayVersion"] == pins["ray"]
    assert f"FROM rayproject/ray:{pins['ray']}-" in (ROOT / "Dockerfile").read_text()


def test_the_entrypoint_is_a_job_the_cli_takes():
    python, script, *args = shlex.split(JOB["spec"]["entrypoint"])
    assert python == "python" and (ROOT / script).is_file() and script.startswith("jobs/")
    command = Path(script).stem
    args, uri = pop_upload(args)
    assert uri and uri.startswith("s3://")
    parsed = CliRunner().invoke(app, [command, *args, "--help"])  # every option is one `falconer mine` takes
    assert parsed.exit_code == 0, parsed.output
