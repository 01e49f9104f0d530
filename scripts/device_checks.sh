#!/usr/bin/env bash
# The checks that need a CUDA device, in one go, each with its own time limit so that one stuck
# part cannot take the others' time: the `cuda` tests, find-batch-size on the GPU, a character
# GPT's tokens per second (toolkit against a hand-written loop, eager and
# compiled in bf16), and the GPU tables of scripts/benchmark.py. Each part's log goes to OUT.
#
#   DATA_DIR=../shared/data bash scripts/device_checks.sh OUT [part ...]   # ROUNDS=2: benchmark rounds
#   parts: tests batch_size text_gpt benchmark (default: all, in that order)
#
# FSDP over NCCL needs two GPUs (NCCL refuses two ranks on one device): the `cuda` tests run it
# where two are visible and skip it, saying so, where one is.
set -uo pipefail
out=${1:?usage: device_checks.sh OUT_FOLDER [part ...]}
shift
mkdir -p "$out"
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(tests batch_size text_gpt benchmark)
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
scratch=$(mktemp -d)

# part NAME SECONDS COMMAND...: runs COMMAND from a folder outside the repository, logging to OUT/NAME.log
part() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    (cd "$scratch" && timeout "$limit" "$@") >"$out/$name.log" 2>&1
    local status=$?
    echo "== $name: exit $status in $((SECONDS - start)) s"
    tail -n 15 "$out/$name.log"
}

repo=$(pwd)
for name in "${parts[@]}"; do
    case $name in
        tests) part tests 300 python3 -m pytest -q -m cuda -p no:cacheprovider --durations=10 \
                   "$repo/tests/test_cuda.py" "$repo/tests/test_fsdp.py" "$repo/tests/test_find_batch_size.py" ;;
        batch_size) part batch_size 180 find-batch-size config=mnist_cnn trainer.accelerator=cuda ;;
        text_gpt) part text_gpt 300 python3 "$repo/scripts/benchmark.py" --mode text_gpt --device cuda --epochs 4 \
                      --rounds "${ROUNDS:-2}" ;;
        benchmark) part benchmark 420 python3 "$repo/scripts/benchmark.py" --device cuda --rounds "${ROUNDS:-2}" ;;
        *) echo "unknown part $name: use tests batch_size text_gpt benchmark" >&2; exit 2 ;;
    esac
done
