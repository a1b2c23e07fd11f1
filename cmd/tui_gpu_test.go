package cmd

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/engine/backend/cuda"
)

// TestGPUGaugesMove checks that the TUI's device gauges, fed by nvmlStats,
// see a job's VRAM: used memory rises by the job's allocation while an
// SD1.5-size UNet runs on the GPU. It skips without an NVIDIA GPU.
func TestGPUGaugesMove(t *testing.T) {
	dev, err := cuda.Open(cuda.Options{})
	if errors.Is(err, cuda.ErrNoDevice) {
		t.Skipf("skipping: no NVIDIA GPU/driver on this machine (%v)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	before, err := nvmlStats{}.GPUStats()
	if err != nil || len(before) == 0 {
		t.Fatalf("no GPU stats: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := engine.BenchUNetStep(context.Background(), dev, "sd15", 512, 512, 2, 3)
		done <- err
	}()
	var peak uint64
	var util float64
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			running = false
		case <-time.After(100 * time.Millisecond):
		}
		st, err := nvmlStats{}.GPUStats()
		if err != nil || len(st) == 0 {
			t.Fatalf("GPU stats during the job: %v", err)
		}
		peak = max(peak, st[0].MemUsed)
		util = max(util, st[0].Util)
	}
	t.Logf("VRAM used %d MiB before, %d MiB peak during the job; peak utilisation %.0f%%", before[0].MemUsed>>20, peak>>20, util)
	if peak < before[0].MemUsed+(1<<30) {
		t.Errorf("VRAM gauge did not move: %d MiB before, %d MiB peak (the job holds > 3 GiB of weights)", before[0].MemUsed>>20, peak>>20)
	}
}
