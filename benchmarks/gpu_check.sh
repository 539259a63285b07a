#!/usr/bin/env bash
# Issue 7's measurements on a lent GPU, in one call (the device tool's budget is short).
# Expects the CIFAR-10 JPEG tarball at .gpu/cifar10-jpeg.tar.gz (carried, never committed).
# Each step has its own time limit so one slow step cannot starve the rest; logs go to $OUT.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
mkdir -p /tmp/cifar && tar -xzf .gpu/cifar10-jpeg.tar.gz -C /tmp/cifar
DATA="--data imagefolder:/tmp/cifar/cifar10-jpeg --data-dir /tmp/ablate-data"
step() { local t=$1; shift; echo "=== $* (limit ${t}s)"; timeout "$t" "$@" 2>&1 | tee -a "$OUT/log.txt"; }
step 60 python3 benchmarks/gpu_sync_check.py
step ${FULL_LIMIT:-260} python3 benchmarks/train_bench.py $DATA --full-trial --depths 20 --compile --json "$OUT/full20.json"
step 110 python3 benchmarks/train_bench.py $DATA --depths 20 56 110 --json "$OUT/compare_eager.json"
step 60 python3 benchmarks/train_bench.py $DATA --pack 4 --depths 20 --iterations 400 --json "$OUT/pack.json"
step 90 python3 benchmarks/train_bench.py $DATA --depths 110 --compile --json "$OUT/compare_compiled110.json"
echo "=== done"
