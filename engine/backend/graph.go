package backend

import (
	"errors"
	"fmt"
	"sync"
)

// ErrGraphsUnavailable is returned (wrapped) by GraphRecorder.RecordGraph
// when the device cannot record graphs right now (profiling, switched off,
// a driver without graph support); callers then run their ops eagerly.
var ErrGraphsUnavailable = errors.New("graph recording unavailable")

// ErrGraphClosed is returned by Graph.Run after the graph was closed, by
// its owner or by the device (which drops graphs to free their memory when
// an allocation fails).
var ErrGraphClosed = errors.New("graph closed")

// GraphRecorder is implemented by devices that can record the ops a
// function queues once and replay them later as one unit (CUDA graphs): a
// replay costs the host one call instead of one per op and the GPU no
// launch gaps.
type GraphRecorder interface {
	// RecordGraph calls fn once with device-owned copies of inputs' shapes
	// and records the ops fn queues without running them. fn must queue
	// device work only: no uploads, downloads or Sync, and no other use of
	// the device may overlap the recording. Every tensor fn allocates
	// belongs to the graph. The tensors fn returns are the graph's outputs.
	// fn's error is returned as is; a recording failure wraps
	// ErrGraphsUnavailable or describes what fn did that cannot be
	// recorded.
	RecordGraph(inputs []*Tensor, fn func(inputs []*Tensor) ([]*Tensor, error)) (Graph, error)
}

// Graph is a recorded sequence of ops over fixed input and output shapes.
type Graph interface {
	// Run copies inputs (the recorded shapes) into the graph, replays it
	// and returns new tensors holding copies of the outputs, so results of
	// earlier runs stay valid. Like any op it is asynchronous: errors
	// surface at the next Sync or Download.
	Run(inputs []*Tensor) ([]*Tensor, error)
	// Nodes is the number of operations in the graph.
	Nodes() int
	// Close releases the graph and its device memory (after the work
	// queued before it).
	Close()
}

// GraphCache runs a function through recorded graphs, one per key (the
// caller's description of its input shapes): the first call with a key runs
// eagerly (a warm-up: libraries plan and tune their kernels for the shapes,
// which they cannot do while being recorded), the second records and later
// calls replay. On devices without GraphRecorder, or when
// recording a key fails, the function runs eagerly every time. The zero
// value is ready to use; a GraphCache must not be copied after first use.
//
// A graph captures the device addresses of everything its ops touch, so a
// cache must be Reset when the tensors the function reads (weights) are
// replaced by others; changing their contents in place is fine.
type GraphCache struct {
	// Max bounds the number of graphs kept (the least recently used is
	// closed first); 0 means 4.
	Max int

	mu      sync.Mutex
	entries map[string]*graphEntry
	order   []string // keys, least recently used first
	replays int
	// why is the latest reason a key runs eagerly.
	why string
}

type graphEntry struct {
	graph Graph // nil: run eagerly
	// warm is set after the eager first call; the next one records.
	warm bool
}

// Run returns fn(inputs), recording or replaying the graph for key on
// devices that support it.
func (c *GraphCache) Run(dev Device, key string, inputs []*Tensor, fn func(inputs []*Tensor) ([]*Tensor, error)) ([]*Tensor, error) {
	rec, ok := dev.(GraphRecorder)
	if !ok {
		return fn(inputs)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]*graphEntry{}
	}
	e, ok := c.entries[key]
	if !ok {
		out, err := fn(inputs)
		if err == nil {
			c.add(key, &graphEntry{warm: true})
		}
		return out, err
	}
	c.touch(key)
	if e.graph != nil {
		out, err := e.graph.Run(inputs)
		if !errors.Is(err, ErrGraphClosed) {
			c.replays++
			return out, err
		}
		// The device dropped the graph for its memory: run eagerly and
		// record again next time.
		e.graph, e.warm = nil, true
		return fn(inputs)
	}
	if !e.warm {
		return fn(inputs) // recording failed before
	}
	e.warm = false
	var fnErr error
	g, err := rec.RecordGraph(inputs, func(in []*Tensor) ([]*Tensor, error) {
		out, err := fn(in)
		fnErr = err
		return out, err
	})
	if fnErr != nil {
		e.warm = true // the function failed, not the recording: try again
		return nil, fnErr
	}
	if err != nil {
		c.why = err.Error()
		return fn(inputs)
	}
	e.graph = g
	return g.Run(inputs)
}

// touch marks key as the most recently used.
func (c *GraphCache) touch(key string) {
	for i, k := range c.order {
		if k == key {
			c.order = append(append(c.order[:i:i], c.order[i+1:]...), key)
			return
		}
	}
}

// add stores an entry, closing the least recently used graph beyond Max.
func (c *GraphCache) add(key string, e *graphEntry) {
	limit := c.Max
	if limit <= 0 {
		limit = 4
	}
	for len(c.order) >= limit {
		old := c.order[0]
		c.order = c.order[1:]
		if g := c.entries[old].graph; g != nil {
			g.Close()
		}
		delete(c.entries, old)
	}
	c.entries[key] = e
	c.order = append(c.order, key)
}

// Reset closes every graph; the next Run of each key records again.
func (c *GraphCache) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		if e.graph != nil {
			e.graph.Close()
		}
	}
	c.entries, c.order, c.why = nil, nil, ""
}

// Status describes the cache: graphs recorded, their sizes and replays, or
// why the function runs eagerly.
func (c *GraphCache) Status() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	graphs, nodes := 0, 0
	for _, e := range c.entries {
		if e.graph != nil {
			graphs++
			nodes += e.graph.Nodes()
		}
	}
	if graphs == 0 {
		if c.why != "" {
			return "graphs off: " + c.why
		}
		return "no graph recorded"
	}
	return fmt.Sprintf("%d graph(s) of %d nodes, %d replays", graphs, nodes, c.replays)
}
