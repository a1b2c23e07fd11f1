package cuda

import (
	"sync"

	"github.com/ebitengine/purego"
)

// callCTrampolineAddr returns the address of the assembly trampoline in
// callc_amd64.s.
func callCTrampolineAddr() uintptr

// maxCArgs is the number of arguments callC passes.
const maxCArgs = 24

// callCOnce binds the trampoline through purego once.
var callCOnce = sync.OnceValue(func() func(fn uintptr, args *[maxCArgs]uintptr) uintptr {
	var f func(fn uintptr, args *[maxCArgs]uintptr) uintptr
	purego.RegisterFunc(&f, callCTrampolineAddr())
	return f
})

// callC calls the C function fn with up to maxCArgs integer or pointer
// arguments (unused trailing slots are ignored by fn) and returns its
// integer result (see callc_amd64.s for why it exists); haveCallC reports
// whether this platform has it.
func callC(fn uintptr, args *[maxCArgs]uintptr) uintptr { return callCOnce()(fn, args) }

// haveCallC reports whether callC is implemented on this platform.
const haveCallC = true
