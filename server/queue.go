package server

import (
	"context"
	"errors"
	"slices"
	"sync"
)

// errQueueFull is returned by fairQueue.push when the queue holds its
// bound; the HTTP layer answers 429.
var errQueueFull = errors.New("the queue is full")

// fairQueue holds the jobs waiting for a worker, one FIFO per client, and
// hands them out round-robin between clients: a client that queues 100
// jobs waits behind one job of each other client, not the other way round.
// It is bounded: push fails once max jobs wait.
type fairQueue struct {
	mu      sync.Mutex
	clients []string // clients with waiting jobs, in round-robin order
	next    int      // index in clients of the next to serve
	waiting map[string][]*job
	n, max  int
	wake    chan struct{} // closed and replaced when a job arrives
}

func newFairQueue(max int) *fairQueue {
	return &fairQueue{waiting: map[string][]*job{}, max: max, wake: make(chan struct{})}
}

// push appends j to its client's FIFO, or fails with errQueueFull.
func (q *fairQueue) push(j *job) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n >= q.max {
		return errQueueFull
	}
	q.add(j)
	return nil
}

// pushAlways appends j even beyond the bound (jobs accepted before a
// restart are never dropped).
func (q *fairQueue) pushAlways(j *job) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.add(j)
}

// add appends j; call with q.mu held.
func (q *fairQueue) add(j *job) {
	if len(q.waiting[j.Client]) == 0 {
		// A new client joins the round just before the one served next,
		// so it is served after every client already waiting.
		q.clients = slices.Insert(q.clients, q.next, j.Client)
		q.next++
		if q.next == len(q.clients) {
			q.next = 0
		}
	}
	q.waiting[j.Client] = append(q.waiting[j.Client], j)
	q.n++
	close(q.wake)
	q.wake = make(chan struct{})
}

// len returns the number of waiting jobs.
func (q *fairQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// position returns how many jobs are handed out before j (0: j is next),
// or -1 when j is not waiting. It follows the round-robin order.
func (q *fairQueue) position(j *job) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	mine := slices.Index(q.waiting[j.Client], j)
	if mine < 0 {
		return -1
	}
	ci := slices.Index(q.clients, j.Client)
	ahead := 0
	for k, c := range q.clients {
		// Rounds before j's: each client gives min(len, mine) jobs; in
		// j's round, the clients served before j's give one more.
		n := min(len(q.waiting[c]), mine)
		if c != j.Client && len(q.waiting[c]) > mine && (k-q.next+len(q.clients))%len(q.clients) < (ci-q.next+len(q.clients))%len(q.clients) {
			n++
		}
		if c != j.Client {
			ahead += n
		}
	}
	return ahead + mine
}

// pop waits for a job and removes it: the head of the next client's FIFO
// in round-robin order, or, when prefer is not nil, the first head in
// that order that prefer accepts (a worker asks for a job whose model it
// has loaded). It returns ctx's error when ctx ends first.
func (q *fairQueue) pop(ctx context.Context, prefer func(*job) bool) (*job, error) {
	for {
		q.mu.Lock()
		if q.n > 0 {
			pick := q.next
			if prefer != nil {
				for k := range q.clients {
					i := (q.next + k) % len(q.clients)
					if prefer(q.waiting[q.clients[i]][0]) {
						pick = i
						break
					}
				}
			}
			c := q.clients[pick]
			j := q.waiting[c][0]
			q.removeAt(pick, 0)
			// The client after the one served is next; removeAt has
			// already moved next when c left the round.
			if len(q.waiting[c]) > 0 {
				q.next = (pick + 1) % len(q.clients)
			}
			q.mu.Unlock()
			return j, nil
		}
		wake := q.wake
		q.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// remove takes j out of the queue (a job cancelled while waiting); it
// reports whether j was waiting.
func (q *fairQueue) remove(j *job) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := slices.Index(q.waiting[j.Client], j)
	if k < 0 {
		return false
	}
	q.removeAt(slices.Index(q.clients, j.Client), k)
	return true
}

// removeAt removes job k of client index ci; a client left with no jobs
// leaves the round, and next keeps pointing at the same client (or the
// one after a removed one).
func (q *fairQueue) removeAt(ci, k int) {
	c := q.clients[ci]
	q.waiting[c] = slices.Delete(q.waiting[c], k, k+1)
	q.n--
	if len(q.waiting[c]) > 0 {
		return
	}
	delete(q.waiting, c)
	q.clients = slices.Delete(q.clients, ci, ci+1)
	if ci < q.next {
		q.next--
	}
	if q.next >= len(q.clients) {
		q.next = 0
	}
}
