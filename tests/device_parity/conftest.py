"""Fixtures of every device-parity module: IEEE float32 on the GPU, no float64 on MPS."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.device_parity._parity import DEV, F64


@pytest.fixture(autouse=True, scope="module")
def _ieee_float32():
    # On Ampere and later GPUs torch lets cuDNN (the fused RNN kernels) compute float32 in
    # TF32 by default: a 10-bit mantissa, i.e. ~1e-3 relative error. That is a precision
    # setting of the user's, not a device bug of the library; the float32 parity checked here
    # is that of IEEE float32 arithmetic, so TF32 is off for each module (restored after).
    if DEV.type != "cuda":
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch prefers its fp32_precision settings
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(autouse=True)
def _dtype_supported(request):
    dtype = request.node.callspec.params.get("dtype") if hasattr(request.node, "callspec") \
        else None
    if dtype == F64 and DEV.type == "mps":
        pytest.skip("MPS has no float64")
