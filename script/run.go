package script

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/traefik/yaegi/interp"

	"github.com/darkroom-ai/darkroom/script/dr"
)

// cellLabel is the pprof goroutine label that marks the goroutines of one
// evaluation; labels are inherited by the goroutines Yaegi starts, which
// lets runCell wait for an interrupted evaluation to wind down.
const cellLabel = "darkroom_cell"

// drainTimeout bounds how long an interrupted cell may take to stop.
const drainTimeout = 30 * time.Second

// interruptGrace is how long an interrupted cell may take to finish by
// itself (engine calls return the cancelled context's error within a
// step) before Yaegi is told to abort it.
const interruptGrace = 2 * time.Second

// runCell runs eval on a labelled goroutine, converting panics into
// errors. eval gets a context of its own, "hard", to pass to Yaegi's
// EvalWithContext. When ctx is cancelled, the cell first gets
// interruptGrace to finish by itself: engine calls see ctx (through
// dr.Context) and return within a step, and the code usually ends soon
// after. Only a cell still running then (an interpreted loop that
// ignores ctx) is aborted by cancelling hard. Yaegi's EvalWithContext
// then returns at once while its goroutine may still be inside a native
// call, so runCell waits (up to drainTimeout) until every goroutine of
// the evaluation has exited: an interrupted cell never overlaps the next.
func runCell(ctx context.Context, id string, eval func(hard context.Context) (reflect.Value, error)) (reflect.Value, error) {
	hard, hardCancel := context.WithCancel(context.Background())
	defer hardCancel()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
			t := time.NewTimer(interruptGrace)
			defer t.Stop()
			select {
			case <-t.C:
				hardCancel()
			case <-finished:
			}
		case <-finished:
		}
	}()
	type result struct {
		v   reflect.Value
		err error
	}
	ch := make(chan result, 1)
	go pprof.Do(context.Background(), pprof.Labels(cellLabel, id), func(context.Context) {
		var r result
		defer func() {
			if p := recover(); p != nil {
				r.err = interp.Panic{Value: p}
			}
			ch <- r
		}()
		r.v, r.err = eval(hard)
	})
	r := <-ch
	if hard.Err() != nil {
		if !waitGoroutines(id, drainTimeout) {
			return r.v, fmt.Errorf("interrupted cell still running after %v", drainTimeout)
		}
	}
	return r.v, r.err
}

// waitGoroutines polls the goroutine profile until no goroutine carries
// the cell's label, and reports whether that happened within timeout.
func waitGoroutines(id string, timeout time.Duration) bool {
	needle := []byte(fmt.Sprintf("%q:%q", cellLabel, id))
	deadline := time.Now().Add(timeout)
	var buf bytes.Buffer
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		buf.Reset()
		if err := pprof.Lookup("goroutine").WriteTo(&buf, 1); err != nil {
			return false
		}
		if !bytes.Contains(buf.Bytes(), needle) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(delay)
	}
}

// cellContext is the context scripts get from dr.Context(): it follows the
// context of the cell being evaluated, so that one `ctx` variable defined
// in an early cell is cancelled by Ctrl-C in every later cell. Between
// cells it is never done.
type cellContext struct {
	cur atomic.Pointer[context.Context]
}

func newCellContext() *cellContext {
	c := &cellContext{}
	bg := context.Background()
	c.cur.Store(&bg)
	return c
}

// set makes ctx the current cell context and returns a function that
// restores the previous one.
func (c *cellContext) set(ctx context.Context) (restore func()) {
	prev := c.cur.Swap(&ctx)
	return func() { c.cur.Store(prev) }
}

func (c *cellContext) get() context.Context { return *c.cur.Load() }

// Deadline returns the current cell's deadline.
func (c *cellContext) Deadline() (time.Time, bool) { return c.get().Deadline() }

// Done returns the current cell's done channel.
func (c *cellContext) Done() <-chan struct{} { return c.get().Done() }

// Err returns the current cell's error.
func (c *cellContext) Err() error { return c.get().Err() }

// Value returns the current cell's value for key.
func (c *cellContext) Value(key any) any { return c.get().Value(key) }

// String names the context in printed values.
func (c *cellContext) String() string { return "dr.Context()" }

// panicMessage turns a recovered panic value into one line.
func panicMessage(v any) error {
	switch p := v.(type) {
	case dr.ScriptError:
		return p.Err
	case *dr.ScriptError:
		return p.Err
	case error:
		return fmt.Errorf("panic: %w", p)
	}
	return fmt.Errorf("panic: %v", v)
}
