#!/usr/bin/env bash
# gpucheck.sh builds the kernels with nvcc and runs the CUDA backend's tests
# on a machine with an NVIDIA GPU and the CUDA toolkit. Build the Go side
# anywhere first (no CUDA needed), then run this from the repository root:
#
#   CGO_ENABLED=0 go test -c -o bin/cuda.test ./engine/backend/cuda/
#   CGO_ENABLED=0 go build -o bin/darkroom .
#   OUT=/tmp/gpucheck bash kernels/gpucheck.sh
#
# The freshly built fatbins are used through DARKROOM_CUDA_KERNELS, so the
# test binary need not embed them; copy $OUT/*.fatbin and
# $OUT/SOURCES.sha256 back into kernels/ and commit them.
set -u
OUT=${OUT:-/tmp/gpucheck}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
nvcc --version | tail -1
ls /usr/local/cuda/lib64/libcublas.so.* /opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib/libcublas.so.* 2>/dev/null
if make -C kernels -B >"$OUT/nvcc.log" 2>&1; then
	cp kernels/*.fatbin kernels/SOURCES.sha256 "$OUT"/
	ls -l kernels/*.fatbin
	make -C kernels report >"$OUT/ptxas.txt" 2>&1
	grep -E "spill|registers" "$OUT/ptxas.txt" | grep -vE " 0 bytes spill stores, 0 bytes spill loads|bytes stack frame, 0 bytes spill" | head -20
else
	echo "nvcc FAILED"
	tail -40 "$OUT/nvcc.log"
fi
echo "--- darkroom devices"
./bin/darkroom devices 2>&1 | tee "$OUT/devices.txt"
echo "--- tests"
DARKROOM_CUDA_KERNELS=kernels DARKROOM_CUDA_TIMING=1 ./bin/cuda.test -test.v -test.count=1 -test.timeout=400s >"$OUT/test.log" 2>&1
echo "cuda.test exit status $?"
grep -E -A12 -- "--- FAIL" "$OUT/test.log" | head -80
grep -E "^(--- |ok|FAIL|PASS)|rel err|out of memory|driver|stats:" "$OUT/test.log" | grep -v -- "--- PASS: TestBucketSize" | cut -c1-300 | tail -45
grep -A14 "TestTiming" "$OUT/test.log" | grep -E "ms|sgemm|attention|conv|groupnorm|add|linear" | tail -10
