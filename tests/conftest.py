import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
# Small per-step work: one thread is faster and keeps timings of the suite stable on 2 cores.
torch.set_num_threads(int(os.environ.get("RNNLAB_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
