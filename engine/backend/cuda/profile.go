package cuda

import (
	"fmt"
	"sort"
	"strings"
)

// A profile measures the GPU time of every kernel and GEMM the device runs
// (Options.Profile): CUDA events are recorded around each one on the
// stream, and ProfileReport sums their elapsed times by name. The events
// add a little time between kernels, so a profiled run is slower than a
// plain one; the per-kernel times are what the GPU spent.
type profile struct {
	free    []uintptr // recycled events
	pending []profiled
}

// profiled is one measured launch: its label and its start/end events.
type profiled struct {
	name       string
	start, end uintptr
}

// profileEvent returns a free event (owner goroutine), or 0 on failure.
func (d *Device) profileEvent() uintptr {
	p := &d.prof
	if n := len(p.free); n > 0 {
		e := p.free[n-1]
		p.free = p.free[:n-1]
		return e
	}
	var e uintptr
	if d.drv.cuEventCreate(&e, 0) != cudaSuccess {
		return 0
	}
	return e
}

// profiledCall runs f, which queues one kernel or GEMM; with
// Options.Profile it records events around it under name (owner
// goroutine). f does not escape, so the closures cost no allocation.
func (d *Device) profiledCall(name string, f func()) {
	if !d.opts.Profile {
		f()
		return
	}
	start, end := d.profileEvent(), d.profileEvent()
	if start == 0 || end == 0 {
		f()
		return
	}
	d.drv.cuEventRecord(start, d.stream)
	f()
	d.drv.cuEventRecord(end, d.stream)
	d.prof.pending = append(d.prof.pending, profiled{name, start, end})
}

// ProfileEntry is the GPU time of one kernel (or GEMM shape) in a profile.
type ProfileEntry struct {
	Name  string
	Calls int
	// Millis is the total GPU time of those calls.
	Millis float64
}

// ProfileReport waits for queued work and returns the GPU time of every
// kernel and GEMM since the last report, largest first, and their total.
// Without Options.Profile it returns nothing.
func (d *Device) ProfileReport() ([]ProfileEntry, float64, error) {
	var entries []ProfileEntry
	var total float64
	var err error
	d.run(func() {
		if r := d.drv.cuStreamSynchronize(d.stream); r != cudaSuccess {
			err = d.drv.errorf("cuStreamSynchronize", r)
			return
		}
		by := map[string]*ProfileEntry{}
		for _, p := range d.prof.pending {
			var ms float32
			if d.drv.cuEventElapsedTime(&ms, p.start, p.end) == cudaSuccess {
				e := by[p.name]
				if e == nil {
					e = &ProfileEntry{Name: p.name}
					by[p.name] = e
				}
				e.Calls++
				e.Millis += float64(ms)
				total += float64(ms)
			}
			d.prof.free = append(d.prof.free, p.start, p.end)
		}
		d.prof.pending = d.prof.pending[:0]
		for _, e := range by {
			entries = append(entries, *e)
		}
	})
	sort.Slice(entries, func(i, j int) bool { return entries[i].Millis > entries[j].Millis })
	return entries, total, err
}

// FormatProfile renders the largest entries of a profile as a table, with
// each entry's share of the total.
func FormatProfile(entries []ProfileEntry, total float64, top int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%10s %6s %6s  %s\n", "GPU ms", "share", "calls", "kernel")
	for i, e := range entries {
		if i == top {
			break
		}
		fmt.Fprintf(&b, "%10.3f %5.1f%% %6d  %s\n", e.Millis, 100*e.Millis/max(total, 1e-9), e.Calls, e.Name)
	}
	fmt.Fprintf(&b, "%10.3f 100.0%% %6s  total\n", total, "")
	return b.String()
}

// releaseProfile destroys the profile's events (owner goroutine, teardown).
func (d *Device) releaseProfile() {
	for _, p := range d.prof.pending {
		d.prof.free = append(d.prof.free, p.start, p.end)
	}
	for _, e := range d.prof.free {
		d.drv.cuEventDestroy(e)
	}
	d.prof = profile{}
}

// ResetProfile discards what the profile measured so far (a benchmark's
// warm-up run, for instance).
func (d *Device) ResetProfile() {
	d.run(func() {
		for _, p := range d.prof.pending {
			d.prof.free = append(d.prof.free, p.start, p.end)
		}
		d.prof.pending = d.prof.pending[:0]
	})
}
