package engine

import (
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend/cuda"
)

// GPU facts the frontends show, from the CUDA backend (so that they need no
// backend package).
type (
	// GPUSystem is what ProbeGPUs found: the driver, cuBLAS, cuDNN and GPUs.
	GPUSystem = cuda.SystemInfo
	// GPUStats is one GPU's live memory, utilisation, temperature and power.
	GPUStats = cuda.GPUStats
)

// ErrNoGPU is matched (errors.Is) by ProbeGPUs when no NVIDIA driver or
// GPU is present.
var ErrNoGPU = cuda.ErrNoDevice

// ProbeGPUs loads the NVIDIA driver and libraries (without keeping a
// device open) and describes them.
func ProbeGPUs() (*GPUSystem, error) { return cuda.Probe() }

// SampleGPUs reads every GPU's live statistics through NVML.
func SampleGPUs() ([]GPUStats, error) { return cuda.Stats() }

// ProfileReport formats the GPU time per kernel and GEMM of the calls
// timed since the profile was last reset, divided by calls (a per-run
// mean), when the engine's device is a GPU opened with Options.Profile; it
// returns "" otherwise.
func (e *Engine) ProfileReport(name string, calls int) (string, error) {
	d, ok := e.dev.(*cuda.Device)
	if !ok || !d.Options().Profile || calls < 1 {
		return "", nil
	}
	entries, total, err := d.ProfileReport()
	if err != nil {
		return "", err
	}
	for i := range entries {
		entries[i].Millis /= float64(calls)
		entries[i].Calls /= calls
	}
	return fmt.Sprintf("GPU time per run of %s (CUDA events, mean of %d runs):\n%s", name, calls, cuda.FormatProfile(entries, total/float64(calls), 30)), nil
}
