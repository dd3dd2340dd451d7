import os
import sys
import tempfile

# A private Ray binds to loopback only when this is set before ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The embedded teacher of every test that names none, its subprocesses included: the
# smallest model, for speed. tests/test_default_teacher.py runs the real default.
os.environ.setdefault("FALCONER_TEACHER_MODEL", "gemma3-270m")
# The S3 server tests/test_remote_corpus.py starts on 127.0.0.1 takes any key; readers take
# keys from the environment only, the Ray workers' included (they inherit it at ray.init).
for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                    ("AWS_EC2_METADATA_DISABLED", "true")):
    os.environ.setdefault(name, value)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_local():
    """One private local Ray (2 CPUs, small object store, own temp dir) for the session."""
    import ray

    tmp = tempfile.mkdtemp(prefix="falconer-ray-")
    ray.init(address="local", num_cpus=2, object_store_memory=400_000_000, include_dashboard=True,
             dashboard_host="127.0.0.1", _temp_dir=tmp, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """Annotation cache shared by the tests of one session, never the user's."""
    return str(tmp_path_factory.mktemp("cache"))


def pytest_collection_modifyitems(items):
    # Ray workers import falconer_ray from the checkout when it is not installed.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
