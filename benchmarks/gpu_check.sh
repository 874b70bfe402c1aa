#!/usr/bin/env bash
# The checks that need a GPU, in one run (CI has none): the CUDA tests, then the ReservoirPy
# comparison with rnnlab on the GPU and the per-step table of the CUDA time loops, then the same
# comparison on the machine's CPU cores.
#
# Run from the repository root on a CUDA machine whose python3 has torch, numpy, scipy, numba,
# networkx, typer, rich, matplotlib, pytest and hypothesis (the package itself is used from
# src/, not installed): `bash benchmarks/gpu_check.sh`. ReservoirPy is taken from wheels in
# .whl/ when that folder exists (for a machine without network access). Logs go to $OUT (default
# ./gpu_check_out). BENCH_ARGS adds options to the benchmark. The benchmark caches its
# Mackey-Glass series in the temporary directory: point TMPDIR at a folder that already holds
# them to skip their generation (about 20 s for the 33 series). A failing step does not stop
# the later ones; the exit status is that of the tests.
set -u
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/rnnlab_site .whl/*.whl && export PYTHONPATH=/tmp/rnnlab_site
fi
export PYTHONPATH=$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, numpy, numba; print('torch', torch.__version__, 'numpy', \
numpy.__version__, 'numba', numba.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

# 1. every test that runs only with a GPU: the CUDA-graph loop, device parity of every model,
# and the CUDA cases of the other files (their names say cuda, cudnn, gpu or moving)
timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider -rfEs \
  tests/test_cuda_graphs.py tests/device_parity tests/test_cudnn_layout.py \
  tests/test_esn.py tests/test_esn_kernels.py tests/test_deep_esn.py tests/test_cost.py \
  tests/test_long_term.py tests/test_music.py tests/test_text.py \
  -k "cuda or cudnn or gpu or graph or parity or device or moving" 2>&1 | tee "$OUT/tests.log"
status=${PIPESTATUS[0]}

# 2. rnnlab's LSTM layer against nn.LSTM on the GPU (forward + backward, cuDNN), the per-step
# table of the CUDA ESN loops (unless KERNEL_TABLE=0), the ReservoirPy comparison on the GPU
timeout "${LSTM_TIMEOUT:-240}" python3 benchmarks/bench_lstm.py --device cuda --clock wall --rounds 3 2>&1 \
  | tee "$OUT/lstm.log"
if [ "${KERNEL_TABLE:-1}" = 1 ]; then
  timeout "${TABLE_TIMEOUT:-90}" python3 benchmarks/bench_reservoirpy.py --device cuda \
    --kernels 2>&1 | tee "$OUT/kernels.log"
fi
# shellcheck disable=SC2086
timeout "${BENCH_TIMEOUT:-240}" python3 benchmarks/bench_reservoirpy.py --device cuda \
  --threads 16 --rpy-threads 1,4,16 --repeats 3 --rpy-sequences 8 ${BENCH_ARGS:-} \
  2>&1 | tee "$OUT/bench.log"
# 3. the same comparison on the machine's CPU cores (rnnlab's kernels on CPU_THREADS threads,
# split rows and split Gram; ReservoirPy at its best BLAS thread count), unless CPU_BENCH=0
if [ "${CPU_BENCH:-1}" = 1 ]; then
  # shellcheck disable=SC2086
  timeout "${CPU_BENCH_TIMEOUT:-240}" python3 benchmarks/bench_reservoirpy.py --device cpu \
    --threads "${CPU_THREADS:-8}" --overlap off --rpy-threads "1,${CPU_THREADS:-8}" \
    --repeats 2 --rpy-sequences 8 ${CPU_BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_cpu.log"
fi
exit "$status"
