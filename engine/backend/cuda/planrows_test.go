package cuda

import (
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// TestPlanRows checks which broadcasts run on binary_rows, and how.
func TestPlanRows(t *testing.T) {
	for _, c := range []struct {
		dst, r tensor.Shape
		want   rowsPlan
		ok     bool
	}{
		{tensor.Shape{1, 4608, 3072}, tensor.Shape{1, 1, 3072}, rowsPlan{4608, 3072, 4608, 1}, true},
		{tensor.Shape{2, 4096, 3072}, tensor.Shape{2, 1, 3072}, rowsPlan{8192, 3072, 4096, 2}, true},
		{tensor.Shape{1, 4608, 24, 128}, tensor.Shape{1, 4608, 1, 128}, rowsPlan{110592, 128, 24, 4608}, true},
		{tensor.Shape{2, 4608, 24, 128}, tensor.Shape{1, 4608, 1, 128}, rowsPlan{221184, 128, 24, 4608}, true},
		{tensor.Shape{64, 320}, tensor.Shape{320}, rowsPlan{64, 320, 64, 1}, true},
		{tensor.Shape{2, 320, 64, 64}, tensor.Shape{2, 320, 1, 1}, rowsPlan{}, false}, // per-channel: inner broadcast
		{tensor.Shape{4, 8}, tensor.Shape{1}, rowsPlan{}, false},
		{tensor.Shape{4, 8}, tensor.Shape{4, 8}, rowsPlan{}, false},
		{tensor.Shape{2, 3, 4, 5}, tensor.Shape{2, 1, 4, 5}, rowsPlan{6, 20, 3, 2}, true},
		{tensor.Shape{2, 3, 4, 5}, tensor.Shape{1, 3, 1, 5}, rowsPlan{24, 5, 4, 3}, true},
		{tensor.Shape{2, 3, 4, 5}, tensor.Shape{2, 1, 1, 5}, rowsPlan{24, 5, 12, 2}, true},
		{tensor.Shape{2, 3, 4, 5}, tensor.Shape{2, 3, 1, 1}, rowsPlan{}, false},
		{tensor.Shape{2, 3, 4, 5}, tensor.Shape{1, 3, 4, 1}, rowsPlan{}, false},
	} {
		got, ok := planRows(c.dst, backend.BroadcastStrides(c.r, c.dst))
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("planRows(%v, %v) = %+v, %v; want %+v, %v", c.dst, c.r, got, ok, c.want, c.ok)
		}
	}
}
