package cuda

import (
	"testing"
	"unsafe"
)

// TestLtHeuristicLayout checks the Go mirror of
// cublasLtMatmulHeuristicResult_t: 64 bytes of algorithm, the workspace
// size at 64, the status at 72, 96 bytes in all.
func TestLtHeuristicLayout(t *testing.T) {
	var h ltHeuristic
	if s, w, st := unsafe.Sizeof(h), unsafe.Offsetof(h.workspace), unsafe.Offsetof(h.state); s != 96 || w != 64 || st != 72 {
		t.Errorf("ltHeuristic: size %d, workspace at %d, state at %d; want 96, 64, 72", s, w, st)
	}
}
