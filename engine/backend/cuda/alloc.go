package cuda

import (
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"time"
)

// gcEveryBytes is how much fresh device memory (cuMemAlloc) triggers a
// background garbage collection: tensors the program dropped without Free
// are then found unreachable and their blocks return to the pool.
const gcEveryBytes = 512 << 20

// ErrOutOfMemory is matched (errors.Is) by every *OutOfMemoryError.
var ErrOutOfMemory = errors.New("cuda: out of memory")

// OutOfMemoryError reports a failed device allocation with what was asked
// for and what the GPU had free after the cache was emptied.
type OutOfMemoryError struct {
	Requested, Free, Total uint64
	// InUse is what this device's tensors held at the time.
	InUse uint64
}

// Error formats the failure.
func (e *OutOfMemoryError) Error() string {
	return fmt.Sprintf("cuda: out of memory: requested %s, %s free of %s (darkroom tensors hold %s)",
		formatBytes(e.Requested), formatBytes(e.Free), formatBytes(e.Total), formatBytes(e.InUse))
}

// Is makes errors.Is(err, ErrOutOfMemory) true.
func (e *OutOfMemoryError) Is(target error) bool { return target == ErrOutOfMemory }

func formatBytes(n uint64) string {
	switch {
	case n >= 1<<40:
		return fmt.Sprintf("%.2f TiB", float64(n)/(1<<40))
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// bucketSize rounds a request up to the allocator's size class: multiples
// of 512 bytes below 2 KiB, then four classes per power of two, so at most
// a quarter of a block is wasted and freed blocks are reused by requests of
// similar size.
func bucketSize(n uint64) uint64 {
	const minBlock = 512
	if n <= minBlock {
		return minBlock
	}
	p := uint64(1) << (63 - bits.LeadingZeros64(n)) // largest power of two <= n
	step := max(p/4, minBlock)
	return (n + step - 1) / step * step
}

// buffer is one device allocation; Tensor.Buf holds a *buffer.
type buffer struct {
	dev   *Device
	ptr   uint64
	size  uint64 // the bucket size actually allocated
	freed bool
	// cleanup returns the block to the pool when the buffer becomes
	// unreachable without Free; Free stops it.
	cleanup runtime.Cleanup
}

// block is a device allocation without its Go wrapper.
type block struct{ ptr, size uint64 }

// released is the buffer cleanup: it runs on the runtime's cleanup
// goroutine, so it only queues the block for the owner goroutine.
func (d *Device) released(b block) {
	d.releasedMu.Lock()
	d.releasedBlocks = append(d.releasedBlocks, b)
	d.releasedMu.Unlock()
}

// drainReleased returns blocks of collected tensors to the pool (owner
// goroutine). Every op keeps its tensors reachable until its work is
// queued, so a released block is only reused by work queued after the
// last use of it: stream order keeps them apart.
func (d *Device) drainReleased() {
	d.releasedMu.Lock()
	blocks := d.releasedBlocks
	d.releasedBlocks = nil
	d.releasedMu.Unlock()
	for _, b := range blocks {
		d.poolPut(&buffer{ptr: b.ptr, size: b.size})
	}
}

func (d *Device) releasedCount() int {
	d.releasedMu.Lock()
	defer d.releasedMu.Unlock()
	return len(d.releasedBlocks)
}

// reclaim runs a garbage collection, waits briefly for the cleanups it
// triggers, returns their blocks to the pool and gives every cached block
// back to the driver, then drops recorded graphs and gives their memory
// back too (owner goroutine, before retrying a failed cuMemAlloc).
func (d *Device) reclaim() {
	runtime.GC()
	deadline := time.Now().Add(100 * time.Millisecond)
	prev := -1
	for time.Now().Before(deadline) {
		n := d.releasedCount()
		if n == prev {
			break
		}
		prev = n
		time.Sleep(2 * time.Millisecond)
	}
	d.drainReleased()
	if d.rec != nil {
		// Freeing the cache waits for the stream, which would end the
		// graph being recorded: keep it.
		return
	}
	d.poolRelease()
	if len(d.graphs) > 0 {
		// Recorded graphs hold their arenas; memory matters more.
		d.dropGraphs()
		d.poolRelease()
	}
}

// pool is a caching allocator: freed blocks go to per-size free lists and
// are handed out again without cuMemAlloc. Blocks enter the free lists only
// on the owner goroutine (Free submits the return like an op; collected
// tensors and scratch buffers are returned there too), so every op that
// used a cached block is already queued on the one stream, and whoever
// takes the block next queues after it. Device.poolMu guards the lists, so
// Alloc takes cached blocks on the caller's goroutine; cuMemAlloc and
// cuMemFree happen on the owner goroutine only.
type pool struct {
	free   map[uint64][]uint64
	cached uint64 // bytes in free lists
	inUse  uint64 // bytes handed out
	peak   uint64 // largest inUse since the last ResetPeakMemory
	allocs int    // cuMemAlloc calls, for tests and stats
	// sinceGC counts fresh cuMemAlloc bytes since the last triggered GC.
	sinceGC uint64
}

// recording returns the arena being recorded as the owner goroutine
// (owner) or the recording caller sees it, or nil (poolMu held).
func (d *Device) recording(owner bool) *arena {
	if owner {
		return d.rec
	}
	return d.recCaller
}

// poolTake returns a cached block of at least n bytes, or nil when the
// cache has none of that size (any goroutine). While a graph is being
// recorded (owner: the owner goroutine's view, else the caller's), blocks
// the recording released come first and every block taken joins the
// recording's arena.
func (d *Device) poolTake(n uint64, owner bool) *buffer {
	d.poolMu.Lock()
	defer d.poolMu.Unlock()
	p := &d.pool
	size := bucketSize(n)
	a := d.recording(owner)
	if a != nil {
		if ptr, ok := a.take(size); ok {
			return &buffer{dev: d, ptr: ptr, size: size}
		}
	}
	l := p.free[size]
	if len(l) == 0 {
		return nil
	}
	ptr := l[len(l)-1]
	p.free[size] = l[:len(l)-1]
	p.cached -= size
	p.inUse += size
	p.peak = max(p.peak, p.inUse)
	if a != nil {
		d.adopt(a, ptr, size)
	}
	return &buffer{dev: d, ptr: ptr, size: size}
}

// poolGet returns a block of at least n bytes, from the cache or from
// cuMemAlloc (owner goroutine). owner tells whose view of a recording the
// block joins (see poolTake).
func (d *Device) poolGet(n uint64, owner bool) (*buffer, error) {
	if b := d.poolTake(n, owner); b != nil {
		return b, nil
	}
	p := &d.pool
	size := bucketSize(n)
	var ptr uint64
	r := d.drv.cuMemAlloc(&ptr, size)
	if r == cudaErrOutOfMemory {
		// Collect dropped tensors, give the cache back to the driver and
		// try once more.
		d.reclaim()
		r = d.drv.cuMemAlloc(&ptr, size)
	}
	if r == cudaErrOutOfMemory {
		d.poolMu.Lock()
		e := &OutOfMemoryError{Requested: n, InUse: p.inUse}
		d.poolMu.Unlock()
		d.drv.cuMemGetInfo(&e.Free, &e.Total)
		return nil, e
	}
	if r != cudaSuccess {
		return nil, d.drv.errorf(fmt.Sprintf("cuMemAlloc(%d)", size), r)
	}
	d.poolMu.Lock()
	defer d.poolMu.Unlock()
	p.allocs++
	p.inUse += size
	p.peak = max(p.peak, p.inUse)
	p.sinceGC += size
	if d.gcEvery > 0 && p.sinceGC >= d.gcEvery {
		p.sinceGC = 0
		go runtime.GC()
	}
	a := d.recording(owner)
	if a != nil {
		d.adopt(a, ptr, size)
	}
	return &buffer{dev: d, ptr: ptr, size: size}, nil
}

// poolPut returns a block to its free list (any goroutine). A block that
// belongs to a graph's arena stays with the graph: it is reusable by the
// rest of the recording, or kept until the graph is closed.
func (d *Device) poolPut(b *buffer) {
	d.poolMu.Lock()
	defer d.poolMu.Unlock()
	if a := d.arenaOf[b.ptr]; a != nil {
		a.release(b.ptr)
		return
	}
	p := &d.pool
	p.free[b.size] = append(p.free[b.size], b.ptr)
	p.cached += b.size
	p.inUse -= b.size
}

// poolRelease frees every cached block (after the stream has drained;
// owner goroutine).
func (d *Device) poolRelease() {
	d.drv.cuStreamSynchronize(d.stream)
	d.poolMu.Lock()
	defer d.poolMu.Unlock()
	for size, l := range d.pool.free {
		for _, ptr := range l {
			d.drv.cuMemFree(ptr)
		}
		delete(d.pool.free, size)
	}
	d.pool.cached = 0
}
