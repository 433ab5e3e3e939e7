import os
import tempfile

import pytest
import torch

# Tiny test networks run fastest on one thread, and one thread keeps timings stable when the
# machine is shared; feature networks trained by the evaluation suite go to a throw-away cache.
torch.set_num_threads(1)
os.environ["GENLAB_CACHE"] = tempfile.mkdtemp(prefix="genlab-test-cache-")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture()
def cache(tmp_path_factory, monkeypatch):
    """A feature-network cache shared by the test session, never the user's ~/.cache."""
    path = tmp_path_factory.getbasetemp() / "genlab-cache"
    monkeypatch.setenv("GENLAB_CACHE", str(path))
    return path
