package cuda

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/darkroom-ai/darkroom/engine/backend"
)

// CUDA graphs. RecordGraph captures the ops a function queues on the
// device's stream (cuStreamBeginCapture in relaxed mode, so that a fresh
// cuMemAlloc stays legal) and instantiates them; Run replays the whole
// sequence with one cuGraphLaunch. A graph reads and writes fixed device
// addresses, so:
//
//   - its inputs are device-owned copies: Run copies the caller's tensors
//     into them on the stream before the launch, and copies the outputs into
//     fresh tensors after it;
//   - every block allocated while recording (tensors and the scratch memory
//     of im2col and friends) joins the graph's arena. A block the recording
//     drops is reused by later allocations of the same recording (stream
//     order is graph order), and is never handed to anyone else until the
//     graph is closed;
//   - tensors from outside the arena that recorded ops use (weights) are
//     kept reachable by the graph, so the garbage collector cannot recycle
//     their memory under it.

// captureModeRelaxed is CU_STREAM_CAPTURE_MODE_RELAXED.
const captureModeRelaxed = 2

// recordGCBytes is how much fresh memory a recording takes before it runs
// a garbage collection, so that the blocks of tensors it dropped are reused
// within the graph instead of growing its arena.
const recordGCBytes = 256 << 20

// arena is the device memory of one graph. Its fields are guarded by
// Device.poolMu; bad and capturing belong to the owner goroutine.
type arena struct {
	recording bool
	// capturing is set once cuStreamBeginCapture succeeded.
	capturing bool
	blocks    map[uint64]*arenaBlock
	// free holds blocks the recording dropped, by size class.
	free map[uint64][]uint64
	// keep holds buffers from outside the arena that recorded ops use.
	keep map[*buffer]struct{}
	// fresh counts bytes joined since the last collection.
	fresh uint64
	// bad says why the recording cannot be replayed.
	bad string
}

type arenaBlock struct {
	size uint64
	live bool // a tensor (or scratch user) holds it
}

func newArena() *arena {
	return &arena{recording: true, blocks: map[uint64]*arenaBlock{}, free: map[uint64][]uint64{}, keep: map[*buffer]struct{}{}}
}

// take reuses a block the recording dropped (poolMu held).
func (a *arena) take(size uint64) (uint64, bool) {
	if !a.recording {
		return 0, false
	}
	l := a.free[size]
	if len(l) == 0 {
		return 0, false
	}
	ptr := l[len(l)-1]
	a.free[size] = l[:len(l)-1]
	a.blocks[ptr].live = true
	return ptr, true
}

// release marks a block unused: reusable by the rest of the recording, or
// kept for the graph (poolMu held).
func (a *arena) release(ptr uint64) {
	b := a.blocks[ptr]
	b.live = false
	if a.recording {
		a.free[b.size] = append(a.free[b.size], ptr)
	}
}

// adopt makes a block handed out while recording part of arena a (poolMu
// held).
func (d *Device) adopt(a *arena, ptr, size uint64) {
	a.blocks[ptr] = &arenaBlock{size: size, live: true}
	a.fresh += size
	d.arenaOf[ptr] = a
}

// disposeArena gives a graph's memory back (owner goroutine, after the work
// queued before): unused blocks return to the pool, and blocks still held by
// a tensor become ordinary blocks that return when it is released.
func (d *Device) disposeArena(a *arena) {
	d.poolMu.Lock()
	defer d.poolMu.Unlock()
	p := &d.pool
	for ptr, b := range a.blocks {
		delete(d.arenaOf, ptr)
		if !b.live {
			p.free[b.size] = append(p.free[b.size], ptr)
			p.cached += b.size
			p.inUse -= b.size
		}
	}
	a.blocks, a.free, a.keep = nil, nil, nil
}

// noteRecorded keeps the outside buffers an op recorded into a graph uses
// (caller's goroutine, from enqueue).
func (d *Device) noteRecorded(keep []*backend.Tensor) {
	d.poolMu.Lock()
	defer d.poolMu.Unlock()
	a := d.recCaller
	if a == nil {
		return
	}
	for _, t := range keep {
		if t == nil {
			continue
		}
		if b, ok := t.Buf.(*buffer); ok && b.ptr != 0 && d.arenaOf[b.ptr] != a {
			a.keep[b] = struct{}{}
		}
	}
}

// collectWhileRecording runs a garbage collection when the recording took
// recordGCBytes of fresh memory since the last one (caller's goroutine).
func (d *Device) collectWhileRecording() {
	d.poolMu.Lock()
	a := d.recCaller
	gc := a != nil && a.fresh >= recordGCBytes
	if gc {
		a.fresh = 0
	}
	d.poolMu.Unlock()
	if gc {
		runtime.GC()
	}
}

// RecordGraph records the ops fn queues as a CUDA graph (see
// backend.GraphRecorder). Profiling (each kernel timed by events) and
// Options.NoGraphs switch recording off.
func (d *Device) RecordGraph(inputs []*backend.Tensor, fn func([]*backend.Tensor) ([]*backend.Tensor, error)) (backend.Graph, error) {
	switch {
	case d.opts.Profile:
		return nil, fmt.Errorf("cuda: %w: the profiler times each kernel", backend.ErrGraphsUnavailable)
	case d.opts.NoGraphs:
		return nil, fmt.Errorf("cuda: %w: switched off", backend.ErrGraphsUnavailable)
	}
	if err := d.stickyErr(); err != nil {
		return nil, err
	}
	a := newArena()
	d.poolMu.Lock()
	if d.recCaller != nil {
		d.poolMu.Unlock()
		return nil, fmt.Errorf("cuda: %w: another recording is in progress", backend.ErrGraphsUnavailable)
	}
	d.recCaller = a
	d.poolMu.Unlock()

	st := &graphState{d: d, arena: a}
	for _, t := range inputs {
		st.ins = append(st.ins, d.Alloc(t.Shape...))
	}
	d.enqueue(func() {
		d.poolMu.Lock()
		d.rec = a
		d.poolMu.Unlock()
		if r := d.drv.cuStreamBeginCapture(d.stream, captureModeRelaxed); r != cudaSuccess {
			a.bad = d.drv.errorf("cuStreamBeginCapture", r).Error()
			return
		}
		a.capturing = true
	})
	// A panic in fn (a shape error) must still end the recording, or the
	// device would stay in it for good: it is caught, the recording
	// discarded, and the panic raised again.
	var outs []*backend.Tensor
	var fnErr error
	var panicked any
	func() {
		defer func() {
			if r := recover(); r != nil {
				panicked, fnErr = r, errRecordPanicked
			}
		}()
		outs, fnErr = fn(st.ins)
	}()
	d.poolMu.Lock()
	d.recCaller = nil
	d.poolMu.Unlock()
	st.outs = outs

	d.run(func() {
		var g uintptr
		if a.capturing {
			if r := d.drv.cuStreamEndCapture(d.stream, &g); r != cudaSuccess && a.bad == "" {
				a.bad = d.drv.errorf("cuStreamEndCapture", r).Error()
			}
		}
		d.poolMu.Lock()
		d.rec = nil
		a.recording = false
		d.poolMu.Unlock()
		if fnErr == nil && a.bad == "" && !d.failed() && g != 0 {
			var exec uintptr
			if r := d.drv.cuGraphInstantiateWithFlags(&exec, g, 0); r != cudaSuccess {
				a.bad = d.drv.errorf("cuGraphInstantiateWithFlags", r).Error()
			} else {
				var n uint64
				if d.drv.cuGraphGetNodes(g, nil, &n) == cudaSuccess {
					st.nodes = int(n)
				}
				st.graph, st.exec = g, exec
				d.graphs[st] = struct{}{}
				return
			}
		}
		if g != 0 {
			d.drv.cuGraphDestroy(g)
		}
		d.disposeArena(a)
	}, outs...)
	if panicked != nil {
		panic(panicked)
	}
	if fnErr != nil {
		return nil, fnErr
	}
	if err := d.stickyErr(); err != nil {
		return nil, err
	}
	if a.bad != "" {
		return nil, fmt.Errorf("cuda: record graph: %s", a.bad)
	}
	for i, o := range outs {
		if o == nil {
			st.close()
			return nil, fmt.Errorf("cuda: record graph: output %d is nil", i)
		}
		if b, ok := o.Buf.(*buffer); !ok || b.dev != d {
			st.close()
			return nil, fmt.Errorf("cuda: record graph: output %d is not a tensor of this device", i)
		}
	}
	g := &graph{st: st}
	runtime.AddCleanup(g, (*graphState).close, st)
	return g, nil
}

// graphState is a recorded graph's resources; graph wraps it so that a
// dropped graph is closed by the garbage collector.
type graphState struct {
	d           *Device
	arena       *arena
	graph, exec uintptr
	nodes       int
	ins, outs   []*backend.Tensor
	closeOnce   sync.Once
	closed      atomic.Bool
	// destroyed is set by destroy (owner goroutine).
	destroyed bool
}

// close destroys the graph and returns its memory, after the work queued
// before (any goroutine). After Close of the device, teardown has done it.
func (st *graphState) close() {
	st.closeOnce.Do(func() {
		st.closed.Store(true)
		d := st.d
		if d.closed.Load() {
			return
		}
		d.tryEnqueue(st.destroy, append(st.ins, st.outs...)...)
	})
}

// destroy frees the executable graph and returns the arena's blocks (owner
// goroutine; once).
func (st *graphState) destroy() {
	if st.destroyed {
		return
	}
	st.destroyed = true
	d := st.d
	if st.exec != 0 {
		d.drv.cuGraphExecDestroy(st.exec)
	}
	if st.graph != 0 {
		d.drv.cuGraphDestroy(st.graph)
	}
	d.disposeArena(st.arena)
	delete(d.graphs, st)
}

// dropGraphs destroys every live graph (owner goroutine, with the stream
// drained): when memory runs out their arenas go back to the pool, and at
// teardown nothing is left behind. A dropped graph's Run returns
// backend.ErrGraphClosed, and GraphCache records it again later.
func (d *Device) dropGraphs() {
	for st := range d.graphs {
		st.closed.Store(true)
		st.destroy()
	}
}

// graph implements backend.Graph.
type graph struct{ st *graphState }

var _ backend.GraphRecorder = (*Device)(nil)

// errRecordPanicked marks a recording whose function panicked.
var errRecordPanicked = errors.New("cuda: the recorded function panicked")

// Run copies inputs into the graph, launches it and copies its outputs into
// new tensors.
func (g *graph) Run(inputs []*backend.Tensor) ([]*backend.Tensor, error) {
	st := g.st
	d := st.d
	if st.closed.Load() || st.exec == 0 {
		return nil, backend.ErrGraphClosed
	}
	if len(inputs) != len(st.ins) {
		return nil, fmt.Errorf("cuda: graph run with %d inputs, recorded with %d", len(inputs), len(st.ins))
	}
	type copyOp struct {
		dst, src uint64
		bytes    uint64
	}
	var before, after []copyOp
	keep := append(append([]*backend.Tensor{}, st.ins...), st.outs...)
	for i, t := range inputs {
		if !t.Shape.Equal(st.ins[i].Shape) {
			return nil, fmt.Errorf("cuda: graph input %d has shape %v, recorded with %v", i, t.Shape, st.ins[i].Shape)
		}
		before = append(before, copyOp{d.ptr(st.ins[i]), d.ptr(t), uint64(t.Len()) * d.es})
		keep = append(keep, t)
	}
	outs := make([]*backend.Tensor, len(st.outs))
	for i, o := range st.outs {
		outs[i] = d.Alloc(o.Shape...)
		after = append(after, copyOp{d.ptr(outs[i]), d.ptr(o), uint64(o.Len()) * d.es})
		keep = append(keep, outs[i])
	}
	d.enqueue(func() {
		if d.failed() {
			return
		}
		copies := func(ops []copyOp) bool {
			for _, c := range ops {
				if c.bytes == 0 || c.dst == 0 || c.src == 0 {
					continue
				}
				if r := d.drv.cuMemcpyDtoDAsync(c.dst, c.src, c.bytes, d.stream); r != cudaSuccess {
					d.setErr(d.drv.errorf("cuMemcpyDtoDAsync", r))
					return false
				}
			}
			return true
		}
		if !copies(before) {
			return
		}
		if r := d.drv.cuGraphLaunch(st.exec, d.stream); r != cudaSuccess {
			d.setErr(d.drv.errorf("cuGraphLaunch", r))
			return
		}
		copies(after)
	}, keep...)
	runtime.KeepAlive(g)
	return outs, nil
}

// Nodes is the number of nodes of the graph.
func (g *graph) Nodes() int { return g.st.nodes }

// Close destroys the graph and returns its memory to the pool.
func (g *graph) Close() { g.st.close() }
