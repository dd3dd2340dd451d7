"""cluster.yaml: the node types the pipeline needs, installs that match the README, and
Ray's own cluster-launcher schema (ray/autoscaler/ray-schema.json)."""

import copy
import json
from pathlib import Path

import pytest
import yaml

CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "cluster.yaml").read_text())
TYPES = CONFIG["available_node_types"]


def setup_of(node_type: str) -> list[str]:
    """The setup a worker type runs: its own worker_setup_commands replace the global lists."""
    return TYPES[node_type].get("worker_setup_commands") or CONFIG["setup_commands"]


def test_node_types_and_resources():
    assert CONFIG["head_node_type"] in TYPES
    head = TYPES[CONFIG["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and head["max_workers"] == 0
    cpu, gpu, llm = TYPES["cpu_workers"], TYPES["gpu_workers"], TYPES["llm_workers"]
    assert cpu["resources"]["CPU"] > 0 and "GPU" not in cpu["resources"]
    assert gpu["resources"]["GPU"] >= 1 and llm["resources"]["GPU"] > gpu["resources"]["GPU"]
    for t in TYPES.values():
        assert 0 <= t["min_workers"] <= t["max_workers"]
        assert t["node_config"]["InstanceType"]
    assert cpu["max_workers"] > cpu["min_workers"]  # it autoscales
    assert CONFIG["max_workers"] >= sum(t["max_workers"] for t in TYPES.values())


def test_setup_installs_the_package():
    base = CONFIG["setup_commands"]
    torch = next(i for i, c in enumerate(base) if "pip install torch" in c)
    package = next(i for i, c in enumerate(base) if "-c constraints.txt -e ." in c)
    assert torch < package  # torch first, as in the README
    assert not any("vllm" in c for c in base)
    assert any('".[vllm]"' in c for c in setup_of("llm_workers"))
    for name in ("cpu_workers", "gpu_workers"):
        assert not any("vllm" in c for c in setup_of(name))
    assert any("-c /tmp/ray-constraint.txt" in c and "grep '^ray==' constraints.txt" in c
               for c in setup_of("llm_workers"))  # vLLM's own torch, the head's Ray
    assert "." in CONFIG["file_mounts"].values()  # the checkout the installs run in
    assert "~/.ray/auth_token" in CONFIG["file_mounts"].values()  # one token for every node
    assert any("/mnt/shared" in c for c in CONFIG["initialization_commands"])  # corpus and runs
    starts = CONFIG["head_start_ray_commands"] + CONFIG["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)


def test_every_node_and_client_gets_one_ray_version():
    import ray

    pins = [line.split("==") for line in (Path(__file__).resolve().parents[1] / "constraints.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert dict(pins)["ray"] == ray.__version__  # what CI installed under the constraints


def test_valid_for_the_ray_cluster_launcher():
    jsonschema = pytest.importorskip("jsonschema")
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(CONFIG, schema)
    validate_config(prepare_config(copy.deepcopy(CONFIG)))  # with the launcher's defaults filled in, as `ray up` does
