#!/usr/bin/env bash
# gpucheck.sh rebuilds the kernels with nvcc and runs every GPU test and the
# side-by-side benchmark on a machine with an NVIDIA GPU and the CUDA
# toolkit. Build the Go side anywhere first (no CUDA needed; nokernels keeps
# the binaries small, they read the fresh fatbins through
# DARKROOM_CUDA_KERNELS), then run this from the repository root:
#
#   T="nodemo nokernels"; export CGO_ENABLED=0
#   go test -tags "$T" -c -o bin/cuda.test ./engine/backend/cuda/
#   go test -tags "$T" -c -o bin/engine.test ./engine/
#   go test -tags "$T" -c -o bin/demo.test ./engine/demo/
#   go build -tags "$T" -o bin/darkroom .
#   OUT=/tmp/gpucheck bash kernels/gpucheck.sh
#
# With diffusers' source on PYTHONPATH it also runs
# tools/bench/side_by_side.py. Copy $OUT/*.fatbin and $OUT/SOURCES.sha256
# back into kernels/ and commit them.
set -u
OUT=${OUT:-/tmp/gpucheck}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
nvcc --version | tail -1
if make -C kernels -B >"$OUT/nvcc.log" 2>&1; then
	cp kernels/*.fatbin kernels/SOURCES.sha256 "$OUT"/
	make -C kernels report >"$OUT/ptxas.txt" 2>&1
	grep -E "spill|registers" "$OUT/ptxas.txt" | grep -vE " 0 bytes spill stores, 0 bytes spill loads|bytes stack frame, 0 bytes spill" | head -20
else
	echo "nvcc FAILED"
	tail -40 "$OUT/nvcc.log"
	exit 1
fi
export DARKROOM_CUDA_KERNELS=$PWD/kernels
echo "--- darkroom devices"
./bin/darkroom devices 2>&1 | tee "$OUT/devices.txt"
echo "--- backend tests"
./bin/cuda.test -test.v -test.count=1 -test.timeout=300s >"$OUT/cuda_test.log" 2>&1
echo "cuda.test exit status $?"
grep -E -A8 -- "--- FAIL" "$OUT/cuda_test.log" | head -40
echo "--- engine GPU tests"
(cd engine && ../bin/engine.test -test.v -test.count=1 -test.run TestGPU -test.timeout=400s >"$OUT/engine_test.log" 2>&1
	echo "engine.test exit status $?")
grep -E "PSNR|relative error|peak|in use|--- FAIL|panic" "$OUT/engine_test.log" | cut -c1-160 | head -30
(cd engine/demo && ../../bin/demo.test -test.v -test.count=1 -test.run TestGPUDigitsSemantic >"$OUT/demo_test.log" 2>&1
	echo "demo.test exit status $?")
grep -E "accuracy|FAIL" "$OUT/demo_test.log" | head
echo "--- benchmarks"
./bin/darkroom bench --device cuda --unet --runs 3 --profile 2>&1 | tee "$OUT/profile_unet.txt" | head -24
if python3 -c "import diffusers" 2>/dev/null; then
	python3 tools/bench/side_by_side.py --darkroom ./bin/darkroom --precision fp16 2>&1 | grep -v "should be kept" | tail -6
else
	./bin/darkroom bench --device cuda --runs 20 2>&1 | tail -4
fi
