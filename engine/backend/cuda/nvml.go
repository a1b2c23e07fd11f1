package cuda

import (
	"fmt"
	"sync"

	"github.com/ebitengine/purego"
)

// nvml is the table of NVML entry points used for GPU statistics. NVML
// needs no CUDA context, so stats never disturb running work.
type nvml struct {
	lib *library

	getCount      func(n *uint32) int32
	getHandle     func(i uint32, h *uintptr) int32
	getName       func(h uintptr, buf *byte, n uint32) int32
	getMemory     func(h uintptr, m *nvmlMemory) int32
	getUtil       func(h uintptr, u *nvmlUtilization) int32
	getTemp       func(h uintptr, sensor int32, t *uint32) int32
	getPower      func(h uintptr, mw *uint32) int32
	getPowerLimit func(h uintptr, mw *uint32) int32
	driverVersion func(buf *byte, n uint32) int32
}

type nvmlMemory struct{ Total, Free, Used uint64 }

type nvmlUtilization struct{ GPU, Memory uint32 }

// nvmlOnce loads and initialises NVML once per process.
var nvmlOnce = sync.OnceValues(loadNVML)

func loadNVML() (*nvml, error) {
	lib, err := openLibrary([]string{"libnvidia-ml.so.1", "libnvidia-ml.so"}, []string{"/usr/lib/wsl/lib", "/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"})
	if err != nil {
		return nil, fmt.Errorf("%w: libnvidia-ml.so.1: %v", ErrNoDevice, err)
	}
	n := &nvml{lib: lib}
	var initFn func() int32
	for _, e := range []struct {
		name string
		fn   any
	}{
		{"nvmlInit_v2", &initFn},
		{"nvmlDeviceGetCount_v2", &n.getCount},
		{"nvmlDeviceGetHandleByIndex_v2", &n.getHandle},
		{"nvmlDeviceGetName", &n.getName},
		{"nvmlDeviceGetMemoryInfo", &n.getMemory},
		{"nvmlDeviceGetUtilizationRates", &n.getUtil},
		{"nvmlDeviceGetTemperature", &n.getTemp},
		{"nvmlDeviceGetPowerUsage", &n.getPower},
		{"nvmlDeviceGetEnforcedPowerLimit", &n.getPowerLimit},
		{"nvmlSystemGetDriverVersion", &n.driverVersion},
	} {
		p, err := lib.sym(e.name)
		if err != nil {
			return nil, fmt.Errorf("nvml: %w", err)
		}
		purego.RegisterFunc(e.fn, p)
	}
	if r := initFn(); r != 0 {
		return nil, fmt.Errorf("%w: nvmlInit: %s", ErrNoDevice, nvmlErrorName(r))
	}
	return n, nil
}

// nvmlErrorName names an nvmlReturn_t.
func nvmlErrorName(r int32) string {
	names := map[int32]string{
		1: "NVML_ERROR_UNINITIALIZED", 2: "NVML_ERROR_INVALID_ARGUMENT", 3: "NVML_ERROR_NOT_SUPPORTED",
		4: "NVML_ERROR_NO_PERMISSION", 6: "NVML_ERROR_NOT_FOUND", 9: "NVML_ERROR_DRIVER_NOT_LOADED",
		12: "NVML_ERROR_LIBRARY_NOT_FOUND", 15: "NVML_ERROR_GPU_IS_LOST", 999: "NVML_ERROR_UNKNOWN",
	}
	if n, ok := names[r]; ok {
		return fmt.Sprintf("%s (%d)", n, r)
	}
	return fmt.Sprintf("NVML error %d", r)
}

func cBytes(buf []byte) string {
	for i, c := range buf {
		if c == 0 {
			return string(buf[:i])
		}
	}
	return string(buf)
}

// GPUStats is a snapshot of one GPU for live gauges. Fields the GPU does
// not report are -1 (or 0 for memory).
type GPUStats struct {
	Index int
	Name  string
	// MemoryUsed and MemoryTotal are bytes of VRAM (all processes).
	MemoryUsed, MemoryTotal uint64
	// UtilizationPct is the percentage of time a kernel ran over the last
	// sample period; MemoryUtilizationPct the same for memory traffic.
	UtilizationPct, MemoryUtilizationPct int
	// TemperatureC is the GPU core temperature in °C.
	TemperatureC int
	// PowerW is the current draw and PowerLimitW the enforced limit, in watts.
	PowerW, PowerLimitW float64
}

// Stats reads every GPU's memory, utilisation, temperature and power
// through NVML. It returns an error wrapping ErrNoDevice when NVML or the
// driver is absent. It is cheap (a few NVML calls per GPU) and safe to call
// from any goroutine, e.g. once a second for a TUI gauge.
func Stats() ([]GPUStats, error) {
	n, err := nvmlOnce()
	if err != nil {
		return nil, err
	}
	var count uint32
	if r := n.getCount(&count); r != 0 {
		return nil, fmt.Errorf("nvmlDeviceGetCount: %s", nvmlErrorName(r))
	}
	out := make([]GPUStats, 0, count)
	for i := range count {
		var h uintptr
		if r := n.getHandle(i, &h); r != 0 {
			return nil, fmt.Errorf("nvmlDeviceGetHandleByIndex(%d): %s", i, nvmlErrorName(r))
		}
		s := GPUStats{Index: int(i), UtilizationPct: -1, MemoryUtilizationPct: -1, TemperatureC: -1, PowerW: -1, PowerLimitW: -1}
		buf := make([]byte, 96)
		if n.getName(h, &buf[0], uint32(len(buf))) == 0 {
			s.Name = cBytes(buf)
		}
		var m nvmlMemory
		if n.getMemory(h, &m) == 0 {
			s.MemoryUsed, s.MemoryTotal = m.Used, m.Total
		}
		var u nvmlUtilization
		if n.getUtil(h, &u) == 0 {
			s.UtilizationPct, s.MemoryUtilizationPct = int(u.GPU), int(u.Memory)
		}
		var t uint32
		if n.getTemp(h, 0, &t) == 0 { // NVML_TEMPERATURE_GPU
			s.TemperatureC = int(t)
		}
		var mw uint32
		if n.getPower(h, &mw) == 0 {
			s.PowerW = float64(mw) / 1000
		}
		if n.getPowerLimit(h, &mw) == 0 {
			s.PowerLimitW = float64(mw) / 1000
		}
		out = append(out, s)
	}
	return out, nil
}

// nvmlFree returns the free VRAM of GPU index i per NVML (ok false if unknown).
func nvmlFree(i int) (free uint64, ok bool) {
	n, err := nvmlOnce()
	if err != nil {
		return 0, false
	}
	var h uintptr
	if n.getHandle(uint32(i), &h) != 0 {
		return 0, false
	}
	var m nvmlMemory
	if n.getMemory(h, &m) != 0 {
		return 0, false
	}
	return m.Free, true
}

// nvmlDriverVersion returns the display driver version ("580.159.04").
func nvmlDriverVersion() string {
	n, err := nvmlOnce()
	if err != nil {
		return ""
	}
	buf := make([]byte, 96)
	if n.driverVersion(&buf[0], uint32(len(buf))) != 0 {
		return ""
	}
	return cBytes(buf)
}
