package cuda

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/ebitengine/purego"
)

// TestCallCPassesEveryArgument calls libc's snprintf through the trampoline
// with 24 arguments (buffer, size, format and 21 integers, most of them on
// the stack) and checks every value arrives in order.
func TestCallCPassesEveryArgument(t *testing.T) {
	lib, err := purego.Dlopen("libc.so.6", purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		t.Skipf("libc not loadable: %v", err)
	}
	fn, err := purego.Dlsym(lib, "snprintf")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	format := []byte(strings.Repeat("%d ", maxCArgs-3) + "\x00")
	var args [maxCArgs]uintptr
	args[0] = uintptr(unsafe.Pointer(&buf[0]))
	args[1] = uintptr(len(buf))
	args[2] = uintptr(unsafe.Pointer(&format[0]))
	var want strings.Builder
	for i := 3; i < maxCArgs; i++ {
		v := int32(1000*i - 7)
		if i%2 == 0 {
			v = -v
		}
		args[i] = uintptr(uint32(v))
		fmt.Fprintf(&want, "%d ", v)
	}
	n := int(int32(callC(fn, &args)))
	runtime.KeepAlive(format)
	got := string(buf[:min(n, len(buf))])
	if got != want.String() {
		t.Fatalf("snprintf through callC wrote %q, want %q", got, want.String())
	}
}
