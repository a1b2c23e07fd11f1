package cuda

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// arenaPtrs lists the blocks a recorded graph owns.
func arenaPtrs(d *Device, g backend.Graph) map[uint64]bool {
	d.poolMu.Lock()
	defer d.poolMu.Unlock()
	out := map[uint64]bool{}
	for p := range g.(*graph).st.arena.blocks {
		out[p] = true
	}
	return out
}

// TestFakeGraphRecordReplay records two ops over a weight tensor, checks
// that recording queues nothing, that each Run copies the input in,
// launches the graph once and copies the output to a fresh tensor, and that
// the graph's blocks are never handed out while it lives.
func TestFakeGraphRecordReplay(t *testing.T) {
	d, f := newFakeDevice(t, 256<<20)
	ctx := context.Background()
	w := d.Upload([]float32{1, 2, 3, 4}, 4)
	fn := func(in []*backend.Tensor) ([]*backend.Tensor, error) {
		y := d.Alloc(4)
		d.Unary(backend.SiLU, y, in[0])
		z := d.Alloc(4)
		d.Binary(backend.Add, z, y, w)
		return []*backend.Tensor{z}, nil
	}
	x := d.Upload([]float32{5, 6, 7, 8}, 4)
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := len(f.launches)
	g, err := d.RecordGraph([]*backend.Tensor{x}, fn)
	if err != nil {
		t.Fatalf("record: %v", err)
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(f.launches) != before {
		t.Fatalf("recording launched %v", f.launches[before:])
	}
	if g.Nodes() != 2 {
		t.Errorf("graph has %d nodes, want 2", g.Nodes())
	}
	owned := arenaPtrs(d, g)
	if len(owned) != 3 { // the input copy, y and z
		t.Errorf("arena holds %d blocks, want 3", len(owned))
	}
	if _, ok := g.(*graph).st.arena.keep[w.Buf.(*buffer)]; !ok {
		t.Error("the graph does not keep the weight it reads")
	}

	for run := range 2 {
		outs, err := g.Run([]*backend.Tensor{x})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if f.graphLaunches != run+1 {
			t.Fatalf("run %d: %d graph launches", run, f.graphLaunches)
		}
		if owned[outs[0].Buf.(*buffer).ptr] {
			t.Error("Run returned the graph's own output block")
		}
		in, err := d.Download(g.(*graph).st.ins[0])
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(in, []float32{5, 6, 7, 8}) {
			t.Errorf("graph input holds %v after Run", in)
		}
	}
	want := []string{"unary_f32", "binary_f32"}
	if got := f.launches[len(f.launches)-2:]; !slices.Equal(got, want) {
		t.Errorf("replayed %v, want %v", got, want)
	}

	// Drop everything the recording allocated, collect, and allocate the
	// same sizes: none of the graph's blocks may come back.
	runtime.GC()
	runtime.GC()
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var hold []*backend.Tensor
	for range 8 {
		hold = append(hold, d.Alloc(4))
	}
	for _, h := range hold {
		if owned[h.Buf.(*buffer).ptr] {
			t.Fatalf("block %#x of a live graph was handed out", h.Buf.(*buffer).ptr)
		}
	}

	// Closing returns the graph's free blocks to the pool.
	_, cachedBefore, _ := d.MemoryStats()
	g.Close()
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	_, cachedAfter, _ := d.MemoryStats()
	if cachedAfter <= cachedBefore {
		t.Errorf("closing the graph cached %d bytes, had %d", cachedAfter, cachedBefore)
	}
	if f.graphsFreed != 1 {
		t.Errorf("%d graphs destroyed, want 1", f.graphsFreed)
	}
	if _, err := g.Run([]*backend.Tensor{x}); err == nil {
		t.Error("Run after Close succeeded")
	}
	runtime.KeepAlive(hold)
}

// TestFakeGraphReusesDroppedBlocks checks that a recording reuses the
// blocks of tensors it dropped (after a collection) instead of growing.
func TestFakeGraphReusesDroppedBlocks(t *testing.T) {
	d, _ := newFakeDevice(t, 256<<20)
	x := d.Upload(make([]float32, 1024), 1024)
	g, err := d.RecordGraph([]*backend.Tensor{x}, func(in []*backend.Tensor) ([]*backend.Tensor, error) {
		h := in[0]
		for range 50 {
			y := d.Alloc(1024)
			d.Unary(backend.SiLU, y, h)
			h = y
			runtime.GC()
		}
		return []*backend.Tensor{h}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(arenaPtrs(d, g)); n > 20 {
		t.Errorf("a chain of 50 ops kept %d blocks; dropped ones are not reused", n)
	}
	g.Close()
}

// TestFakeGraphRejectsUploads checks that an upload inside the recorded
// function fails the recording without breaking the device, and that a
// GraphCache then runs the function eagerly.
func TestFakeGraphRejectsUploads(t *testing.T) {
	d, f := newFakeDevice(t, 256<<20)
	ctx := context.Background()
	x := d.Upload([]float32{1, 2}, 2)
	fn := func(in []*backend.Tensor) ([]*backend.Tensor, error) {
		b := d.Upload([]float32{3, 4}, 2)
		y := d.Alloc(2)
		d.Binary(backend.Add, y, in[0], b)
		return []*backend.Tensor{y}, nil
	}
	_, err := d.RecordGraph([]*backend.Tensor{x}, fn)
	if err == nil || !strings.Contains(err.Error(), "upload") {
		t.Fatalf("record with an upload: err = %v", err)
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatalf("device broken by a failed recording: %v", err)
	}
	var c backend.GraphCache
	var outs []*backend.Tensor
	for range 3 { // warm-up, failed recording, eager
		if outs, err = c.Run(d, "k", []*backend.Tensor{x}, fn); err != nil {
			t.Fatal(err)
		}
	}
	got, err := d.Download(outs[0])
	if err != nil {
		t.Fatal(err)
	}
	_ = got // the fake runs no kernels; the eager path must simply work
	if f.graphLaunches != 0 {
		t.Errorf("%d graph launches after a failed recording", f.graphLaunches)
	}
	if s := c.Status(); !strings.Contains(s, "upload") {
		t.Errorf("status %q does not say why graphs are off", s)
	}
}

// TestFakeGraphCache records once per key and replays afterwards, and
// passes the function's own error through without caching it.
func TestFakeGraphCache(t *testing.T) {
	d, f := newFakeDevice(t, 256<<20)
	ctx := context.Background()
	calls := 0
	fn := func(in []*backend.Tensor) ([]*backend.Tensor, error) {
		calls++
		y := d.Alloc(in[0].Shape...)
		d.Unary(backend.SiLU, y, in[0])
		return []*backend.Tensor{y}, nil
	}
	var c backend.GraphCache
	x := d.Upload([]float32{1, 2, 3}, 3)
	for range 4 {
		if _, err := c.Run(d, "3", []*backend.Tensor{x}, fn); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// An eager warm-up, a recording (launched once), then two replays.
	if calls != 2 || f.graphLaunches != 3 {
		t.Errorf("fn called %d times, %d graph launches; want 2 and 3", calls, f.graphLaunches)
	}
	if s := c.Status(); !strings.Contains(s, "1 graph(s)") || !strings.Contains(s, "2 replays") {
		t.Errorf("status %q", s)
	}
	boom := errors.New("boom")
	if _, err := c.Run(d, "other", []*backend.Tensor{x}, func([]*backend.Tensor) ([]*backend.Tensor, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("fn error = %v, want boom", err)
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatalf("device broken by a failed function: %v", err)
	}
	freed := f.graphsFreed
	c.Reset()
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if f.graphsFreed != freed+1 {
		t.Errorf("Reset destroyed %d graphs, want 1", f.graphsFreed-freed)
	}
}

// TestGPUGraphMatchesEager replays a recorded block (GroupNorm+SiLU, a
// convolution onto a residual, token projections, attention, a residual
// linear and the projection back) on two inputs and checks that each
// replay gives exactly the eager result, in fp32 and fp16.
func TestGPUGraphMatchesEager(t *testing.T) {
	for _, dt := range []tensor.DType{tensor.F32, tensor.F16} {
		t.Run(dt.String(), func(t *testing.T) {
			d := deviceFor(t, dt)
			rng := rand.New(rand.NewPCG(7, 8))
			up := func(scale float64, shape ...int) *backend.Tensor {
				n := tensor.Shape(shape).NumElements()
				v := make([]float32, n)
				for i := range v {
					v[i] = float32(rng.NormFloat64() * scale)
				}
				return d.Upload(v, shape...)
			}
			const c, hw = 32, 16
			gnW, gnB := up(1, c), up(0.1, c)
			convW, convB := up(0.06, c, c, 3, 3), up(0.1, c)
			inW, inB, outW, outB := up(0.17, c, c), up(0.1, c), up(0.17, c, c), up(0.1, c)
			lnW, lnB := up(1, c), up(0.1, c)
			fn := func(in []*backend.Tensor) ([]*backend.Tensor, error) {
				x := in[0]
				h := d.Alloc(x.Shape...)
				d.GroupNorm(h, x, gnW, gnB, 8, 1e-5, true)
				y := d.Alloc(x.Shape...)
				d.Conv2DAdd(y, h, convW, convB, x, backend.Conv2DSame(1, 1))
				tok := d.Alloc(2, hw*hw, c)
				d.LinearFromChannels(tok, y, inW, inB)
				n := d.Alloc(tok.Shape...)
				d.LayerNorm(n, tok, lnW, lnB, 1e-5)
				a := d.Alloc(tok.Shape...)
				d.Attention(a, n, n, n, backend.AttentionParams{Heads: 2, Scale: 0.25})
				d.LinearAdd(tok, a, inW, inB, tok)
				out := d.Alloc(x.Shape...)
				d.LinearToChannels(out, tok, outW, outB, y)
				return []*backend.Tensor{out}, nil
			}
			x1, x2 := up(1, 2, c, hw, hw), up(1, 2, c, hw, hw)
			eager := func(x *backend.Tensor) []float32 {
				outs, _ := fn([]*backend.Tensor{x})
				v, err := d.Download(outs[0])
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			want1, want2 := eager(x1), eager(x2)
			g, err := d.RecordGraph([]*backend.Tensor{x1}, fn)
			if err != nil {
				t.Fatalf("record: %v", err)
			}
			defer g.Close()
			t.Logf("graph of %d nodes", g.Nodes())
			for i, c := range []struct {
				x    *backend.Tensor
				want []float32
			}{{x2, want2}, {x1, want1}, {x2, want2}} {
				outs, err := g.Run([]*backend.Tensor{c.x})
				if err != nil {
					t.Fatal(err)
				}
				got, err := d.Download(outs[0])
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, c.want) {
					rel, worst := relErr(got, c.want)
					t.Fatalf("replay %d differs from the eager run: rel err %.3g, worst %.3g", i, rel, worst)
				}
			}
		})
	}
}

// TestFakeGraphPanicEndsRecording checks that a panic in the recorded
// function ends the recording: the panic reaches the caller, and the
// device then syncs and records again.
func TestFakeGraphPanicEndsRecording(t *testing.T) {
	d, f := newFakeDevice(t, 256<<20)
	x := d.Upload([]float32{1, 2}, 2)
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Error("the function's panic did not reach the caller")
			}
		}()
		d.RecordGraph([]*backend.Tensor{x}, func(in []*backend.Tensor) ([]*backend.Tensor, error) {
			d.Unary(backend.SiLU, d.Alloc(2), in[0])
			panic("shape error")
		})
	}()
	if err := d.Sync(context.Background()); err != nil {
		t.Fatalf("sync after a panicked recording: %v", err)
	}
	g, err := d.RecordGraph([]*backend.Tensor{x}, func(in []*backend.Tensor) ([]*backend.Tensor, error) {
		y := d.Alloc(2)
		d.Unary(backend.SiLU, y, in[0])
		return []*backend.Tensor{y}, nil
	})
	if err != nil {
		t.Fatalf("record after a panicked recording: %v", err)
	}
	defer g.Close()
	if f.capturing {
		t.Error("the fake stream is still capturing")
	}
}

// TestFakeOutOfMemoryDropsGraphs fills a small card with a graph's arena:
// an allocation that needs the memory drops the graph instead of failing,
// the graph's Run then reports ErrGraphClosed, and a GraphCache falls back
// to running the function.
func TestFakeOutOfMemoryDropsGraphs(t *testing.T) {
	d, _ := newFakeDevice(t, 7<<19) // 3.5 MiB
	x := d.Upload(make([]float32, 1024), 1024)
	fn := func(in []*backend.Tensor) ([]*backend.Tensor, error) {
		big := d.Alloc(256 << 10) // 1 MiB, dropped inside the recording
		d.Unary(backend.SiLU, big, big)
		y := d.Alloc(1024)
		d.Unary(backend.SiLU, y, in[0])
		return []*backend.Tensor{y}, nil
	}
	var c backend.GraphCache
	for range 2 { // warm-up, then record
		if _, err := c.Run(d, "k", []*backend.Tensor{x}, fn); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	big := d.Alloc(640 << 10) // 2.5 MiB: only fits once the arena is given back
	if err := d.Sync(context.Background()); err != nil {
		t.Fatalf("allocation next to a graph's arena: %v", err)
	}
	d.Free(big)
	if _, err := c.Run(d, "k", []*backend.Tensor{x}, fn); err != nil {
		t.Fatalf("GraphCache after the device dropped its graph: %v", err)
	}
	if err := d.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}
