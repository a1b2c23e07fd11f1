package cuda

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// abiVersion is the CUDA driver ABI this package is written against. Every
// entry point is resolved with cuGetProcAddress for this version, so a CUDA
// 13 driver hands out the CUDA 12.0 signatures (cuMemAlloc_v2,
// cuCtxCreate_v2 ...) that the Go declarations below match.
const abiVersion = 12000

// result is a CUresult.
type result int32

const (
	cudaSuccess        result = 0
	cudaErrOutOfMemory result = 2
)

// Device attributes (CUdevice_attribute).
const (
	attrMultiprocessors   = 16
	attrComputeMajor      = 75
	attrComputeMinor      = 76
	funcAttrMaxDynamicSMB = 8 // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
)

// driver is the table of CUDA driver API entry points used by the backend.
type driver struct {
	lib     *library
	version int // cuDriverGetVersion: 12040 is CUDA 12.4

	cuInit                    func(flags uint32) result
	cuDriverGetVersion        func(v *int32) result
	cuGetErrorName            func(r result, s *unsafe.Pointer) result
	cuGetErrorString          func(r result, s *unsafe.Pointer) result
	cuDeviceGetCount          func(n *int32) result
	cuDeviceGet               func(dev *int32, ordinal int32) result
	cuDeviceGetName           func(name *byte, n int32, dev int32) result
	cuDeviceTotalMem          func(bytes *uint64, dev int32) result
	cuDeviceGetAttribute      func(v *int32, attr int32, dev int32) result
	cuDevicePrimaryCtxRetain  func(ctx *uintptr, dev int32) result
	cuDevicePrimaryCtxRelease func(dev int32) result
	cuCtxSetCurrent           func(ctx uintptr) result
	cuStreamCreate            func(s *uintptr, flags uint32) result
	cuStreamDestroy           func(s uintptr) result
	cuStreamSynchronize       func(s uintptr) result
	cuMemAlloc                func(p *uint64, size uint64) result
	cuMemFree                 func(p uint64) result
	cuMemGetInfo              func(free, total *uint64) result
	cuMemHostAlloc            func(p *unsafe.Pointer, size uint64, flags uint32) result
	cuMemFreeHost             func(p unsafe.Pointer) result
	cuMemcpyHtoDAsync         func(dst uint64, src unsafe.Pointer, n uint64, s uintptr) result
	cuMemcpyDtoHAsync         func(dst unsafe.Pointer, src uint64, n uint64, s uintptr) result
	cuMemcpyDtoDAsync         func(dst, src uint64, n uint64, s uintptr) result
	cuModuleLoadData          func(m *uintptr, image unsafe.Pointer) result
	cuModuleUnload            func(m uintptr) result
	cuModuleGetFunction       func(f *uintptr, m uintptr, name string) result
	cuFuncSetAttribute        func(f uintptr, attr int32, v int32) result
	cuLaunchKernel            func(f uintptr, gx, gy, gz, bx, by, bz, shmem uint32, s uintptr, params unsafe.Pointer, extra unsafe.Pointer) result
	cuEventCreate             func(e *uintptr, flags uint32) result
	cuEventDestroy            func(e uintptr) result
	cuEventRecord             func(e uintptr, s uintptr) result
	cuEventElapsedTime        func(ms *float32, start, end uintptr) result
	// CUDA graphs (stream capture).
	cuStreamBeginCapture        func(s uintptr, mode int32) result
	cuStreamEndCapture          func(s uintptr, g *uintptr) result
	cuGraphInstantiateWithFlags func(exec *uintptr, g uintptr, flags uint64) result
	cuGraphLaunch               func(exec uintptr, s uintptr) result
	cuGraphExecDestroy          func(exec uintptr) result
	cuGraphDestroy              func(g uintptr) result
	cuGraphGetNodes             func(g uintptr, nodes *uintptr, n *uint64) result
}

// ErrNoDevice means no usable NVIDIA driver or GPU was found; callers fall
// back to the CPU.
var ErrNoDevice = errors.New("no NVIDIA driver or GPU found")

// driverOnce caches the loaded driver for the life of the process.
var driverOnce = sync.OnceValues(loadDriver)

// loadDriver opens libcuda.so.1, resolves the entry points and runs cuInit.
// Any failure wraps ErrNoDevice.
func loadDriver() (*driver, error) {
	lib, err := openLibrary([]string{"libcuda.so.1", "libcuda.so"}, []string{"/usr/lib/wsl/lib", "/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"})
	if err != nil {
		return nil, fmt.Errorf("%w: libcuda.so.1: %v", ErrNoDevice, err)
	}
	d := &driver{lib: lib}
	if err := d.resolve(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoDevice, err)
	}
	if r := d.cuInit(0); r != cudaSuccess {
		return nil, fmt.Errorf("%w: cuInit: %v", ErrNoDevice, d.errorf("cuInit", r))
	}
	var v int32
	if r := d.cuDriverGetVersion(&v); r != cudaSuccess {
		return nil, fmt.Errorf("%w: %v", ErrNoDevice, d.errorf("cuDriverGetVersion", r))
	}
	d.version = int(v)
	return d, nil
}

// resolve fills the table through cuGetProcAddress (the _v2 form of CUDA
// 12+, else the CUDA 11.3 form).
func (d *driver) resolve() error {
	var lookup func(name string) (uintptr, error)
	if p, err := d.lib.sym("cuGetProcAddress_v2"); err == nil {
		var getProc func(symbol string, pfn *uintptr, version int32, flags uint64, status *int32) result
		purego.RegisterFunc(&getProc, p)
		lookup = func(name string) (uintptr, error) {
			var fn uintptr
			var status int32
			if r := getProc(name, &fn, abiVersion, 0, &status); r != cudaSuccess || fn == 0 {
				return 0, fmt.Errorf("cuGetProcAddress(%s, %d): result %d, status %d", name, abiVersion, r, status)
			}
			return fn, nil
		}
	} else if p, err := d.lib.sym("cuGetProcAddress"); err == nil {
		var getProc func(symbol string, pfn *uintptr, version int32, flags uint64) result
		purego.RegisterFunc(&getProc, p)
		lookup = func(name string) (uintptr, error) {
			var fn uintptr
			if r := getProc(name, &fn, abiVersion, 0); r != cudaSuccess || fn == 0 {
				return 0, fmt.Errorf("cuGetProcAddress(%s, %d): result %d", name, abiVersion, r)
			}
			return fn, nil
		}
	} else {
		return fmt.Errorf("driver too old: no cuGetProcAddress (need CUDA 12 or newer): %w", err)
	}
	for _, e := range []struct {
		name string
		fn   any
	}{
		{"cuInit", &d.cuInit},
		{"cuDriverGetVersion", &d.cuDriverGetVersion},
		{"cuGetErrorName", &d.cuGetErrorName},
		{"cuGetErrorString", &d.cuGetErrorString},
		{"cuDeviceGetCount", &d.cuDeviceGetCount},
		{"cuDeviceGet", &d.cuDeviceGet},
		{"cuDeviceGetName", &d.cuDeviceGetName},
		{"cuDeviceTotalMem", &d.cuDeviceTotalMem},
		{"cuDeviceGetAttribute", &d.cuDeviceGetAttribute},
		{"cuDevicePrimaryCtxRetain", &d.cuDevicePrimaryCtxRetain},
		{"cuDevicePrimaryCtxRelease", &d.cuDevicePrimaryCtxRelease},
		{"cuCtxSetCurrent", &d.cuCtxSetCurrent},
		{"cuStreamCreate", &d.cuStreamCreate},
		{"cuStreamDestroy", &d.cuStreamDestroy},
		{"cuStreamSynchronize", &d.cuStreamSynchronize},
		{"cuMemAlloc", &d.cuMemAlloc},
		{"cuMemFree", &d.cuMemFree},
		{"cuMemGetInfo", &d.cuMemGetInfo},
		{"cuMemHostAlloc", &d.cuMemHostAlloc},
		{"cuMemFreeHost", &d.cuMemFreeHost},
		{"cuMemcpyHtoDAsync", &d.cuMemcpyHtoDAsync},
		{"cuMemcpyDtoHAsync", &d.cuMemcpyDtoHAsync},
		{"cuMemcpyDtoDAsync", &d.cuMemcpyDtoDAsync},
		{"cuModuleLoadData", &d.cuModuleLoadData},
		{"cuModuleUnload", &d.cuModuleUnload},
		{"cuModuleGetFunction", &d.cuModuleGetFunction},
		{"cuFuncSetAttribute", &d.cuFuncSetAttribute},
		{"cuLaunchKernel", &d.cuLaunchKernel},
		{"cuEventCreate", &d.cuEventCreate},
		{"cuEventDestroy", &d.cuEventDestroy},
		{"cuEventRecord", &d.cuEventRecord},
		{"cuEventElapsedTime", &d.cuEventElapsedTime},
		{"cuStreamBeginCapture", &d.cuStreamBeginCapture},
		{"cuStreamEndCapture", &d.cuStreamEndCapture},
		{"cuGraphInstantiateWithFlags", &d.cuGraphInstantiateWithFlags},
		{"cuGraphLaunch", &d.cuGraphLaunch},
		{"cuGraphExecDestroy", &d.cuGraphExecDestroy},
		{"cuGraphDestroy", &d.cuGraphDestroy},
		{"cuGraphGetNodes", &d.cuGraphGetNodes},
	} {
		p, err := lookup(e.name)
		if err != nil {
			return err
		}
		purego.RegisterFunc(e.fn, p)
	}
	return nil
}

// cString copies a NUL-terminated C string.
func cString(p unsafe.Pointer) string {
	if p == nil {
		return ""
	}
	var b []byte
	for i := 0; i < 4096; i++ {
		c := *(*byte)(unsafe.Add(p, i))
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

// Error is a failed CUDA driver call, with the code's name from
// cuGetErrorName ("CUDA_ERROR_ILLEGAL_ADDRESS").
type Error struct {
	Op   string // the driver function, e.g. "cuLaunchKernel(attention_f32_d64)"
	Code int
	Name string
	Desc string
}

// Error formats the failure.
func (e *Error) Error() string {
	if e.Desc != "" {
		return fmt.Sprintf("cuda: %s: %s (%d): %s", e.Op, e.Name, e.Code, e.Desc)
	}
	return fmt.Sprintf("cuda: %s: %s (%d)", e.Op, e.Name, e.Code)
}

// errorf wraps a non-success result; it returns nil for success.
func (d *driver) errorf(op string, r result) error {
	if r == cudaSuccess {
		return nil
	}
	e := &Error{Op: op, Code: int(r), Name: fmt.Sprintf("CUDA_ERROR_%d", int(r))}
	if d != nil && d.cuGetErrorName != nil {
		var p unsafe.Pointer
		if d.cuGetErrorName(r, &p) == cudaSuccess && p != nil {
			e.Name = cString(p)
		}
		if d.cuGetErrorString(r, &p) == cudaSuccess && p != nil {
			e.Desc = cString(p)
		}
	}
	return e
}

// versionString formats a CUDA version number (12040 -> "12.4").
func versionString(v int) string { return fmt.Sprintf("%d.%d", v/1000, v%1000/10) }

// deviceName returns the marketing name of device dev.
func (d *driver) deviceName(dev int32) string {
	buf := make([]byte, 256)
	if d.cuDeviceGetName(&buf[0], int32(len(buf)), dev) != cudaSuccess {
		return "unknown NVIDIA GPU"
	}
	for i, c := range buf {
		if c == 0 {
			return string(buf[:i])
		}
	}
	return string(buf)
}

// attr reads a device attribute, 0 when unavailable.
func (d *driver) attr(dev int32, a int32) int {
	var v int32
	if d.cuDeviceGetAttribute(&v, a, dev) != cudaSuccess {
		return 0
	}
	return int(v)
}
