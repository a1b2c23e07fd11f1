package cuda

import (
	"fmt"
	"path/filepath"
	"sync"

	"github.com/ebitengine/purego"
)

// cuBLAS constants.
const (
	cublasOpN = 0
	cublasOpT = 1
	// cublasDefaultMath keeps float32 GEMMs in full float32 (no TF32).
	cublasDefaultMath = 0
	// cublasTF32Math allows TF32 tensor cores for float32 GEMMs.
	cublasTF32Math = 3
)

// cublas is the table of cuBLAS entry points used by the backend.
type cublas struct {
	lib *library
	// lt is libcublasLt, opened before cuBLAS (nil when it was not found
	// by itself); cublaslt.go resolves its entry points.
	lt                  *library
	major, minor, patch int

	create      func(h *uintptr) int32
	destroy     func(h uintptr) int32
	setStream   func(h uintptr, s uintptr) int32
	setMathMode func(h uintptr, mode int32) int32
	sgemm       func(h uintptr, ta, tb int32, m, n, k int32, alpha *float32, a uint64, lda int32, b uint64, ldb int32, beta *float32, c uint64, ldc int32) int32
	// gemmEx is cublasGemmEx: 16-bit operands with float32 compute.
	gemmEx func(h uintptr, ta, tb int32, m, n, k int32, alpha *float32, a uint64, atype int32, lda int32,
		b uint64, btype int32, ldb int32, beta *float32, c uint64, ctype int32, ldc int32, compute int32, algo int32) int32
}

// cudaDataType_t and cublasComputeType_t values.
const (
	cudaR32F         = 0
	cudaR16F         = 2
	cudaR16BF        = 14
	cublasCompute32F = 68
	// cublasGemmDefault is CUBLAS_GEMM_DEFAULT.
	cublasGemmDefault = -1
)

// Version returns "13.0.2".
func (c *cublas) Version() string { return fmt.Sprintf("%d.%d.%d", c.major, c.minor, c.patch) }

// cublasOnce caches cuBLAS for the process; the driver version picks the
// preferred major version (a CUDA 12 driver cannot run cuBLAS 13).
var cublasOnce = sync.OnceValues(func() (*cublas, error) {
	drv, err := driverOnce()
	if err != nil {
		return nil, err
	}
	return loadCublas(drv.version)
})

func loadCublas(driverVersion int) (*cublas, error) {
	majors := []string{"13", "12"}
	if driverVersion < 13000 {
		majors = []string{"12"}
	}
	dirs := defaultSearchDirs()
	var errs []error
	for _, m := range majors {
		// Load cuBLASLt first, from the folder cuBLAS will come from when we
		// can tell, so that cuBLAS's dependency resolves to it.
		lt, ltErr := openLibrary([]string{"libcublasLt.so." + m}, dirs)
		blasDirs := dirs
		if ltErr == nil && filepath.IsAbs(lt.path) {
			blasDirs = append([]string{filepath.Dir(lt.path)}, dirs...)
		}
		lib, err := openLibrary([]string{"libcublas.so." + m}, blasDirs)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c := &cublas{lib: lib}
		if ltErr == nil {
			c.lt = lt
		}
		if err := c.resolve(); err != nil {
			errs = append(errs, err)
			continue
		}
		return c, nil
	}
	return nil, fmt.Errorf("cuda: cuBLAS not found (install the CUDA toolkit or pip install nvidia-cublas, or set CUDA_PATH / LD_LIBRARY_PATH): %v", errs)
}

func (c *cublas) resolve() error {
	var getProperty func(t int32, v *int32) int32
	for _, e := range []struct {
		name string
		fn   any
	}{
		{"cublasCreate_v2", &c.create},
		{"cublasDestroy_v2", &c.destroy},
		{"cublasSetStream_v2", &c.setStream},
		{"cublasSetMathMode", &c.setMathMode},
		{"cublasSgemm_v2", &c.sgemm},
		{"cublasGemmEx", &c.gemmEx},
		{"cublasGetProperty", &getProperty},
	} {
		p, err := c.lib.sym(e.name)
		if err != nil {
			return err
		}
		purego.RegisterFunc(e.fn, p)
	}
	for i, v := range []*int{&c.major, &c.minor, &c.patch} {
		var x int32
		if getProperty(int32(i), &x) == 0 {
			*v = int(x)
		}
	}
	return nil
}

// cublasStatusNames maps cublasStatus_t codes to their names.
var cublasStatusNames = map[int32]string{
	0:  "CUBLAS_STATUS_SUCCESS",
	1:  "CUBLAS_STATUS_NOT_INITIALIZED",
	3:  "CUBLAS_STATUS_ALLOC_FAILED",
	7:  "CUBLAS_STATUS_INVALID_VALUE",
	8:  "CUBLAS_STATUS_ARCH_MISMATCH",
	11: "CUBLAS_STATUS_MAPPING_ERROR",
	13: "CUBLAS_STATUS_EXECUTION_FAILED",
	14: "CUBLAS_STATUS_INTERNAL_ERROR",
	15: "CUBLAS_STATUS_NOT_SUPPORTED",
	16: "CUBLAS_STATUS_LICENSE_ERROR",
}

// cublasErr wraps a non-zero cublasStatus_t; nil for success.
func cublasErr(op string, st int32) error {
	if st == 0 {
		return nil
	}
	name, ok := cublasStatusNames[st]
	if !ok {
		name = fmt.Sprintf("CUBLAS_STATUS_%d", st)
	}
	return fmt.Errorf("cuda: %s: %s (%d)", op, name, st)
}
