package cmd

import (
	"errors"
	"fmt"
	"io"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/spf13/cobra"
)

func newDevicesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "devices",
		Short: "List the GPUs (driver, cuBLAS, cuDNN, VRAM) and the CPU darkroom can use",
		Long: `List the compute devices darkroom can use.

For NVIDIA GPUs it prints each GPU's name, architecture, multiprocessor count
and VRAM (total and free), the driver version, the CUDA version the driver
supports and the cuBLAS library found. darkroom needs no CUDA toolkit: the
driver (libcuda.so.1) is loaded at run time, and cuBLAS is looked up in the
system loader path, CUDA_PATH/CUDA_HOME, LD_LIBRARY_PATH and pip-installed
nvidia-cublas wheels. On a machine without an NVIDIA driver it says so and
lists the CPU only. For the CPU it names the matrix-multiply micro-kernel
in use, chosen from what the CPU supports: AVX-512, AVX2+FMA or generic
(pure Go).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDevices(cmd.OutOrStdout())
		},
	}
}

func runDevices(w io.Writer) error {
	info, err := engine.ProbeGPUs()
	switch {
	case errors.Is(err, engine.ErrNoGPU):
		fmt.Fprintf(w, "no NVIDIA GPU: %v\n\n", err)
	case err != nil:
		fmt.Fprintf(w, "NVIDIA GPU probe failed: %v\n\n", err)
	default:
		driver := "NVIDIA driver"
		if info.DriverVersion != "" {
			driver += " " + info.DriverVersion
		}
		fmt.Fprintf(w, "%s (CUDA %s, %s)\n", driver, info.CUDAVersion, info.DriverPath)
		if info.CUBLASError != "" {
			fmt.Fprintf(w, "cuBLAS: not found: %s\n", info.CUBLASError)
		} else {
			fmt.Fprintf(w, "cuBLAS %s (%s)\n", info.CUBLASVersion, info.CUBLASPath)
		}
		if info.CUDNNError != "" {
			fmt.Fprintf(w, "cuDNN: not found, convolutions use im2col: %s\n", info.CUDNNError)
		} else {
			fmt.Fprintf(w, "cuDNN %s (%s)\n", info.CUDNNVersion, info.CUDNNPath)
		}
		fmt.Fprintln(w)
		rows := [][]string{{"device", "name", "arch", "SMs", "VRAM total", "VRAM free"}}
		for _, g := range info.GPUs {
			free := "?"
			if g.MemoryFree > 0 {
				free = humanBytes(int64(g.MemoryFree))
			}
			rows = append(rows, []string{fmt.Sprintf("cuda:%d", g.Ordinal), g.Name, g.Arch(), fmt.Sprint(g.Multiprocessors), humanBytes(int64(g.MemoryTotal)), free})
		}
		writeTable(w, "", rows, []bool{false, false, false, true, true, true})
		fmt.Fprintln(w)
	}
	eng, err := engine.Open(engine.Options{Device: "cpu"})
	if err != nil {
		return fmt.Errorf("open cpu: %w", err)
	}
	defer eng.Close()
	for _, d := range eng.Devices() {
		if d.Kind != "cpu" {
			continue
		}
		fmt.Fprintf(w, "cpu  %s, RAM %s total, %s available\n", d.Name, humanBytes(int64(d.MemoryTotal)), humanBytes(int64(d.MemoryFree)))
	}
	fmt.Fprintf(w, "cpu kernel: %s\n", engine.CPUKernel())
	return nil
}
