#!/usr/bin/env bash
# The prepared GPU check (one command, under 8 minutes): environment, GPU tests, kernel benchmarks and the
# end-to-end satmae table, all written to $OUT. Meant for the lent H100/H200 machine (Python 3.12, torch 2.11,
# triton 3.6, no network); without a GPU it runs every stage in a reduced form so it can be tested on a CPU.
#
#   OUT=/some/dir bash benchmarks/gpu/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-benchmarks/results/local}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # no network there: run from the checkout, no install
PY=${PYTHON:-python}
status=0

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, remember failures
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc after $((SECONDS - start))s; tail of $OUT/$name.log:"
  tail -n 5 "$OUT/$name.log" | sed 's/^/   /'
  [ $rc -eq 0 ] || status=1
}

if $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  GPU=1
else
  GPU=0
  echo "no GPU: running every stage in its reduced CPU form"
fi

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import sys, torch, triton; print('python', sys.version.split()[0]); print('torch', torch.__version__, \
'cuda', torch.version.cuda); print('triton', triton.__version__)"
  git rev-parse HEAD 2>/dev/null
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# GPU time limits add up to 475 s (under 8 minutes); each stage keeps what it finished (e2e writes after every row)
if [ $GPU -eq 1 ]; then
  # the CUDA extension first: JIT build with ninja (cached for every later stage) and its self-test; a failed
  # build prints the compiler output into the stage's log
  stage build_cuda 90 env MAX_JOBS=16 $PY -m slimkern.backends.cuda.check
  SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  stage sanitizer 30 "$SANITIZER" --tool memcheck --error-exitcode 1 $PY -m benchmarks.gpu.cuda_sanitize
  # the tests that touch CUDA (CI runs the rest on CPU); the nvcc/SASS compile checks are CPU-side and run in CI
  stage tests 120 $PY -m pytest tests/backends tests/zoo/test_all_backends.py tests/zoo/test_croma.py \
    tests/serving/test_graphs.py tests/test_backends.py tests/test_attention_bias.py tests/test_inputs.py \
    --ignore=tests/backends/test_cuda_compile.py -q -ra -p no:cacheprovider --junitxml="$OUT/tests.xml"
  stage kernels_linear 50 $PY -m pytest benchmarks/bench_sliced_linear.py -q -p no:cacheprovider --benchmark-only \
    --benchmark-json="$OUT/kernels_linear.json" --benchmark-columns=median
  stage kernels_attention 40 $PY -m pytest benchmarks/bench_attention.py -q -p no:cacheprovider --benchmark-only \
    --benchmark-json="$OUT/kernels_attention.json" --benchmark-columns=median
  # no --compile here (a torch.compile per width would eat the budget): batch 64 and 1 for every backend
  stage e2e 90 $PY -m benchmarks.e2e_widths --device cuda --dtype bfloat16 --batches 64,1 \
    --backends torch,triton,cuda --repeats 10 --json "$OUT/e2e.json" --markdown "$OUT/e2e.md"
else
  stage cuda_compile 180 $PY csrc/check_sass.py   # nvcc for sm_90a/sm_80 and the SASS table (skips nothing)
  stage tests 300 $PY -m pytest tests/test_plan.py tests/backends/test_triton_backend.py \
    tests/backends/test_cuda_backend.py -q -p no:cacheprovider --junitxml="$OUT/tests.xml"
  stage kernels_linear 300 $PY -m pytest benchmarks/bench_sliced_linear.py -q -p no:cacheprovider --benchmark-only \
    --benchmark-json="$OUT/kernels_linear.json" --benchmark-columns=median
  stage kernels_attention 300 $PY -m pytest benchmarks/bench_attention.py -q -p no:cacheprovider --benchmark-only \
    --benchmark-json="$OUT/kernels_attention.json" --benchmark-columns=median
  stage e2e 600 $PY -m benchmarks.e2e_widths --widths 1,0.1 --batches 1 --repeats 1 \
    --json "$OUT/e2e.json" --markdown "$OUT/e2e.md"
fi
# HTTP serving under load (mixed budgets, CUDA graphs): load + graph captures + 3 s warm-up + 10 s of load
if [ $GPU -eq 1 ]; then SERVE=(--device cuda --dtype bfloat16 --seconds 10); else
  # a 2-block model's unslimmed stem is 18 % of its compute: its FLOPs budgets must be above that
  SERVE=(--arch depth=2,dim=128,num_heads=2 --seconds 5 --budgets width=1,width=0.5,flops=0.5,width=0.1,flops=0.2)
fi
stage serve_load 45 $PY -m benchmarks.serve_load "${SERVE[@]}" --warmup-seconds 3 --json "$OUT/serve_load.json" \
  --markdown "$OUT/serve_load.md"
stage summary 10 $PY -m benchmarks.gpu.summarize "$OUT"
echo "results in $OUT (status $status)"
exit $status
