package cuda

import "fmt"

// GPUInfo describes one GPU as the CUDA driver numbers it.
type GPUInfo struct {
	Ordinal int
	Name    string
	// ComputeMajor and ComputeMinor are the compute capability (9, 0 for H100).
	ComputeMajor, ComputeMinor int
	Multiprocessors            int
	// MemoryTotal is bytes of VRAM; MemoryFree is 0 when NVML is absent.
	MemoryTotal, MemoryFree uint64
}

// Arch returns the SASS target name ("sm_90").
func (g GPUInfo) Arch() string { return fmt.Sprintf("sm_%d%d", g.ComputeMajor, g.ComputeMinor) }

// SystemInfo is what `darkroom devices` prints.
type SystemInfo struct {
	// DriverVersion is the display driver ("580.159.04"), empty without NVML.
	DriverVersion string
	// CUDAVersion is the newest CUDA version the driver supports ("13.0").
	CUDAVersion string
	// CUBLASVersion is the loaded cuBLAS ("13.0.2"); empty with CUBLASError set
	// when cuBLAS could not be loaded.
	CUBLASVersion, CUBLASPath, CUBLASError string
	// CUDNNVersion is the cuDNN found ("9.14.0"), optional: empty with
	// CUDNNError set when it is missing (convolutions then use im2col).
	CUDNNVersion, CUDNNPath, CUDNNError string
	// DriverPath is where libcuda was found.
	DriverPath string
	GPUs       []GPUInfo
}

// Probe loads the driver (and cuBLAS, cuDNN and NVML where present) and lists the
// GPUs without creating a CUDA context. Without a driver or GPU it returns
// an error wrapping ErrNoDevice.
func Probe() (*SystemInfo, error) {
	drv, err := driverOnce()
	if err != nil {
		return nil, err
	}
	info := &SystemInfo{CUDAVersion: versionString(drv.version), DriverPath: drv.lib.path, DriverVersion: nvmlDriverVersion()}
	if b, err := cublasOnce(); err != nil {
		info.CUBLASError = err.Error()
	} else {
		info.CUBLASVersion, info.CUBLASPath = b.Version(), b.lib.path
	}
	if l, err := cudnnOnce(); err != nil {
		info.CUDNNError = err.Error()
	} else {
		info.CUDNNVersion, info.CUDNNPath = l.Version(), l.lib.path
	}
	var n int32
	if r := drv.cuDeviceGetCount(&n); r != cudaSuccess {
		return nil, fmt.Errorf("%w: %v", ErrNoDevice, drv.errorf("cuDeviceGetCount", r))
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: the driver sees no GPU", ErrNoDevice)
	}
	for i := range n {
		g, err := gpuInfo(drv, int(i))
		if err != nil {
			return nil, err
		}
		info.GPUs = append(info.GPUs, g)
	}
	return info, nil
}

// gpuInfo describes GPU ordinal i.
func gpuInfo(drv *driver, i int) (GPUInfo, error) {
	var dev int32
	if r := drv.cuDeviceGet(&dev, int32(i)); r != cudaSuccess {
		return GPUInfo{}, drv.errorf(fmt.Sprintf("cuDeviceGet(%d)", i), r)
	}
	g := GPUInfo{
		Ordinal:         i,
		Name:            drv.deviceName(dev),
		ComputeMajor:    drv.attr(dev, attrComputeMajor),
		ComputeMinor:    drv.attr(dev, attrComputeMinor),
		Multiprocessors: drv.attr(dev, attrMultiprocessors),
	}
	if r := drv.cuDeviceTotalMem(&g.MemoryTotal, dev); r != cudaSuccess {
		return GPUInfo{}, drv.errorf("cuDeviceTotalMem", r)
	}
	if f, ok := nvmlFree(i); ok {
		g.MemoryFree = f
	}
	return g, nil
}
