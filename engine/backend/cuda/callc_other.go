//go:build !amd64

package cuda

// maxCArgs is the number of arguments callC passes.
const maxCArgs = 24

// callC is implemented on amd64 only (callc_amd64.s); elsewhere the
// mixed-precision GEMMs that need it are unavailable and the device runs
// in float32.
func callC(fn uintptr, args *[maxCArgs]uintptr) uintptr {
	panic("cuda: callC is not implemented on this platform")
}

// haveCallC reports whether callC is implemented on this platform.
const haveCallC = false
