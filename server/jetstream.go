package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The JetStream names the server and its workers share.
const (
	// jobStream is the durable work queue of tasks: a task for model M
	// is a message on jobSubject.<modelToken(M)>, taken by one worker of
	// that subject's consumer (consumerPrefix + token), and it leaves
	// the stream once acknowledged. One subject per model lets a worker
	// ask for the jobs of the models it has loaded first.
	jobStream      = "DARKROOM_JOBS"
	jobSubject     = "darkroom.jobs"
	consumerPrefix = "darkroom-m-"
	// legacyConsumer is the one unfiltered consumer of darkroom 0.x
	// before the per-model subjects; it is removed when found.
	legacyConsumer = "darkroom-workers"
	// pendingStream keeps the tasks a server has accepted but not yet
	// handed to the work queue (they wait in its fair queue), on
	// pendingPrefix + the server's origin token: a restarted server
	// queues them again, so no accepted job is lost.
	pendingStream = "DARKROOM_PENDING"
	pendingPrefix = "darkroom.pending."
	// queuedSubject (core NATS) wakes idle workers when a task is
	// published.
	queuedSubject = "darkroom.queued"
	// resultBucket (a key-value bucket) holds "result.ID" once a task's
	// outcome is stored, "cancel.ID" for a cancelled task; blobBucket (an
	// object store) holds the outcomes ("result.ID", images included) and
	// the tasks too large for a message ("task.ID").
	resultBucket = "darkroom-results"
	blobBucket   = "darkroom-blobs"
	// Core NATS subjects: progress of task ID, cancels, worker
	// heartbeats, admin commands.
	progressPrefix  = "darkroom.progress."
	cancelSubject   = "darkroom.cancel"
	workerSubject   = "darkroom.workers"
	unloadSubject   = "darkroom.admin.unload"
	inlineTaskLimit = 256 << 10
	resultTTL       = 24 * time.Hour
	// maxDeliveriesAdvisory is JetStream's notice that the workers'
	// consumer gave up on a message.
	maxDeliveriesAdvisory = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + jobStream + ".*"
	heartbeatEvery        = 2 * time.Second
	// idlePoll is how often an idle worker looks at the queue when no
	// notice wakes it (a redelivery after AckWait sends none).
	idlePoll = time.Second
	// consumerIdle removes a model's consumer unused this long.
	consumerIdle = 24 * time.Hour
)

// subjectToken hashes a name (a model's, a server's) to a NATS-safe
// subject token.
func subjectToken(name string) string {
	h := sha256.Sum256([]byte(name))
	return hex.EncodeToString(h[:8])
}

// modelToken is the subject token of a task's model: its name as workers
// report it loaded (engine.Engine.Loaded).
func modelToken(model string) string { return subjectToken(modelKey(model)) }

// JetStreamOptions configure the JetStream queue.
type JetStreamOptions struct {
	// AckWait is how long a worker may go silent on a task before it is
	// redelivered to another (default 30s); a live worker reports
	// progress to JetStream at a third of it.
	AckWait time.Duration
	// Window is how many tasks the server hands to JetStream ahead of the
	// workers (default 16); the rest wait in the server's fair queue.
	Window int
	// MaxDeliver is how many times a task is delivered before it fails
	// (default 5): a task that kills every worker that takes it (out of
	// memory) fails instead of going round for ever.
	MaxDeliver int
	// Origin names the server among the servers of one NATS cluster
	// (default: the host name): a restarted server takes back the jobs
	// it had accepted, and only those.
	Origin string
	// Log receives the worker's job lines (nil: none).
	Log *slog.Logger
	// stored, when set, is called with a task's id each time a worker has
	// run it and stored its outcome (tests count the runs).
	stored func(id string)
}

func (o *JetStreamOptions) setDefaults() {
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.Window <= 0 {
		o.Window = 16
	}
	if o.MaxDeliver <= 0 {
		o.MaxDeliver = 5
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Origin == "" {
		o.Origin, _ = os.Hostname()
	}
}

// queue is the JetStream side both the server and the workers open.
type queue struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	blobs jetstream.ObjectStore
	opts  JetStreamOptions
	// jobs and pending are the two streams (handles, not snapshots: each
	// call asks the server).
	jobs, pending jetstream.Stream

	mu   sync.Mutex
	cons map[string]jetstream.Consumer // by model token
}

// openQueue creates (or updates) the stream, the consumer and the buckets.
func openQueue(ctx context.Context, nc *nats.Conn, opts JetStreamOptions) (*queue, error) {
	opts.setDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	jobs, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: jobStream, Subjects: []string{jobSubject + ".*"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("jetstream stream %s: %w", jobStream, err)
	}
	// An unfiltered consumer would overlap the per-model ones, which a
	// work queue refuses.
	if err := js.DeleteConsumer(ctx, jobStream, legacyConsumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("jetstream consumer %s: %w", legacyConsumer, err)
	}
	pending, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: pendingStream, Subjects: []string{pendingPrefix + "*"}, Storage: jetstream.FileStorage,
		Duplicates: 10 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("jetstream stream %s: %w", pendingStream, err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: resultBucket, TTL: resultTTL, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("jetstream bucket %s: %w", resultBucket, err)
	}
	blobs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: blobBucket, TTL: resultTTL, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("jetstream object store %s: %w", blobBucket, err)
	}
	return &queue{nc: nc, js: js, kv: kv, blobs: blobs, opts: opts, jobs: jobs, pending: pending, cons: map[string]jetstream.Consumer{}}, nil
}

// consumer returns the durable consumer of the tasks for model token,
// creating it when needed.
func (q *queue) consumer(ctx context.Context, token string) (jetstream.Consumer, error) {
	q.mu.Lock()
	c := q.cons[token]
	q.mu.Unlock()
	if c != nil {
		return c, nil
	}
	c, err := q.js.CreateOrUpdateConsumer(ctx, jobStream, jetstream.ConsumerConfig{
		Durable: consumerPrefix + token, FilterSubject: jobSubject + "." + token,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: q.opts.AckWait, MaxDeliver: q.opts.MaxDeliver,
		MaxAckPending: 1024, InactiveThreshold: consumerIdle,
	})
	if err != nil {
		return nil, fmt.Errorf("jetstream consumer %s: %w", consumerPrefix+token, err)
	}
	q.mu.Lock()
	q.cons[token] = c
	q.mu.Unlock()
	return c, nil
}

// forget drops a cached consumer that failed (removed while idle): the
// next use creates it again.
func (q *queue) forget(token string) {
	q.mu.Lock()
	delete(q.cons, token)
	q.mu.Unlock()
}

// take fetches the next task message a worker with models loaded should
// run, or nil when no task is free. Among the models with tasks waiting,
// the loaded ones come first, then the one whose oldest task is oldest,
// so that the server's fair order holds between models.
func (q *queue) take(ctx context.Context, loaded []string) (jetstream.Msg, error) {
	st := q.jobs
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(jobSubject+".*"))
	if err != nil {
		return nil, fmt.Errorf("jetstream stream %s: %w", jobStream, err)
	}
	mine := map[string]bool{}
	for _, m := range loaded {
		mine[modelToken(m)] = true
	}
	type candidate struct {
		token  string
		loaded bool
		first  uint64
	}
	var cands []candidate
	for subj, n := range info.State.Subjects {
		if n == 0 {
			continue
		}
		c := candidate{token: strings.TrimPrefix(subj, jobSubject+"."), first: math.MaxUint64}
		c.loaded = mine[c.token]
		if m, err := st.GetMsg(ctx, info.State.FirstSeq, jetstream.WithGetMsgSubject(subj)); err == nil {
			c.first = m.Sequence
		}
		cands = append(cands, c)
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		if a.loaded != b.loaded {
			if a.loaded {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.first, b.first)
	})
	for _, c := range cands {
		cons, err := q.consumer(ctx, c.token)
		if err != nil {
			return nil, err
		}
		batch, err := cons.FetchNoWait(1)
		if err != nil {
			q.forget(c.token)
			return nil, fmt.Errorf("fetch: %w", err)
		}
		for msg := range batch.Messages() {
			return msg, nil
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			q.forget(c.token)
		}
	}
	return nil, nil
}

// taskStub is a job message whose task is in the object store.
type taskStub struct {
	ID     string `json:"id"`
	Stored bool   `json:"stored"`
}

// JetStream is the backend of a server whose workers take tasks from a
// JetStream work queue: workers in this process (RunWorker with the same
// connection) or anywhere on the NATS cluster (`darkroom worker`).
type JetStream struct {
	q *queue

	mu       sync.Mutex
	inflight map[string]bool   // tasks handed to JetStream, not yet finished
	held     map[string]uint64 // accepted tasks still in the fair queue: their pending stream sequence
	room     chan struct{}     // signalled when a task finishes
	workers  map[string]workerSeen
}

type workerSeen struct {
	info WorkerInfo
	at   time.Time
}

// NewJetStream opens the queue on nc for a server.
func NewJetStream(ctx context.Context, nc *nats.Conn, opts JetStreamOptions) (*JetStream, error) {
	q, err := openQueue(ctx, nc, opts)
	if err != nil {
		return nil, err
	}
	return &JetStream{q: q, inflight: map[string]bool{}, held: map[string]uint64{}, room: make(chan struct{}, 1), workers: map[string]workerSeen{}}, nil
}

// pendingSubject is the subject of the tasks this server holds.
func (b *JetStream) pendingSubject() string { return pendingPrefix + subjectToken(b.q.opts.Origin) }

// Hold stores a task the server accepts in the pending stream, before
// the server answers for it: until it is handed to the work queue it
// survives a restart of the server.
func (b *JetStream) Hold(ctx context.Context, t Task) error {
	t.Origin = b.q.opts.Origin
	data, err := b.q.encode(ctx, t)
	if err != nil {
		return err
	}
	ack, err := b.q.js.Publish(ctx, b.pendingSubject(), data, jetstream.WithMsgID("pending."+t.ID))
	if err != nil {
		return fmt.Errorf("keep the job in JetStream: %w", err)
	}
	b.mu.Lock()
	b.held[t.ID] = ack.Sequence
	b.mu.Unlock()
	return nil
}

// Release forgets a held task: it is on the work queue now, or was
// cancelled while it waited.
func (b *JetStream) Release(id string) {
	b.mu.Lock()
	seq, ok := b.held[id]
	delete(b.held, id)
	b.mu.Unlock()
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.q.pending.DeleteMsg(ctx, seq)
}

// Held returns the tasks this server (its Origin) had accepted when it
// stopped: those still waiting for the work queue, in the order they
// came, and those on the work queue without an outcome yet. The server
// calls it once, before Serve.
func (b *JetStream) Held(ctx context.Context) (waiting, handed []Task, err error) {
	read := func(st jetstream.Stream, subject string, f func(seq uint64, t Task)) error {
		stream := st.CachedInfo().Config.Name
		info, err := st.Info(ctx)
		if err != nil {
			return fmt.Errorf("jetstream stream %s: %w", stream, err)
		}
		for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue // acknowledged or released
			}
			if err != nil {
				return fmt.Errorf("jetstream stream %s: message %d: %w", stream, seq, err)
			}
			if subject != "" && m.Subject != subject {
				continue
			}
			t, err := b.q.task(ctx, m.Data)
			if err != nil {
				b.q.opts.Log.Error("held job unreadable, skipped", "stream", stream, "seq", seq, "error", err)
				continue
			}
			f(seq, t)
		}
		return nil
	}
	origin := b.q.opts.Origin
	seen := map[string]bool{}
	if err := read(b.q.jobs, "", func(_ uint64, t Task) {
		if t.Origin == origin && !seen[t.ID] {
			seen[t.ID] = true
			handed = append(handed, t)
		}
	}); err != nil {
		return nil, nil, err
	}
	if err := read(b.q.pending, b.pendingSubject(), func(seq uint64, t Task) {
		if seen[t.ID] {
			// Handed out just before the server stopped, not yet
			// released: the work queue has it.
			b.q.pending.DeleteMsg(ctx, seq)
			return
		}
		seen[t.ID] = true
		b.mu.Lock()
		b.held[t.ID] = seq
		b.mu.Unlock()
		waiting = append(waiting, t)
	}); err != nil {
		return nil, nil, err
	}
	b.mu.Lock()
	for _, t := range handed {
		b.inflight[t.ID] = true
	}
	b.mu.Unlock()
	return waiting, handed, nil
}

// Serve hands the server's jobs to JetStream, at most Window ahead, and
// reports the workers' progress and outcomes back, until ctx ends.
func (b *JetStream) Serve(ctx context.Context, s *Server) error {
	nc := b.q.nc
	progress, err := nc.Subscribe(progressPrefix+"*", func(m *nats.Msg) {
		var p Progress
		if json.Unmarshal(m.Data, &p) == nil {
			s.Progressed(p)
		}
	})
	if err != nil {
		return fmt.Errorf("nats subscribe: %w", err)
	}
	defer progress.Unsubscribe()
	beats, err := nc.Subscribe(workerSubject, func(m *nats.Msg) {
		var w WorkerInfo
		if json.Unmarshal(m.Data, &w) == nil {
			w.Remote = true
			b.mu.Lock()
			b.workers[w.Name] = workerSeen{w, time.Now()}
			b.mu.Unlock()
		}
	})
	if err != nil {
		return fmt.Errorf("nats subscribe: %w", err)
	}
	defer beats.Unsubscribe()
	// A task delivered MaxDeliver times without an outcome fails.
	exceeded, err := nc.Subscribe(maxDeliveriesAdvisory, func(m *nats.Msg) {
		var adv struct {
			StreamSeq uint64 `json:"stream_seq"`
		}
		if json.Unmarshal(m.Data, &adv) == nil {
			go b.q.giveUp(ctx, adv.StreamSeq)
		}
	})
	if err != nil {
		return fmt.Errorf("nats subscribe: %w", err)
	}
	defer exceeded.Unsubscribe()
	watch, err := b.q.kv.Watch(ctx, "result.*", jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("watch %s: %w", resultBucket, err)
	}
	defer watch.Stop()
	// Outcomes stored before the watch began (tasks handed out before a
	// restart) come from the store.
	b.mu.Lock()
	var before []string
	for id := range b.inflight {
		before = append(before, id)
	}
	b.mu.Unlock()
	for _, id := range before {
		if o, ok := b.Stored(ctx, id); ok {
			s.Finished(o)
			b.done(id)
		}
	}
	go func() {
		for e := range watch.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			id := e.Key()[len("result."):]
			if !s.has(id) {
				continue
			}
			o, err := b.q.outcome(ctx, id)
			if err != nil {
				o = Outcome{ID: id, Error: err.Error()}
			}
			s.Finished(o)
			b.done(id)
		}
	}()
	for {
		if err := b.waitRoom(ctx); err != nil {
			return err
		}
		t, err := s.Next(ctx, nil)
		if err != nil {
			return err
		}
		b.mu.Lock()
		b.inflight[t.ID] = true
		b.mu.Unlock()
		t.Origin = b.q.opts.Origin
		if err := b.q.publish(ctx, t); err != nil {
			if ctx.Err() != nil {
				return ctx.Err() // held: the next server hands it out
			}
			s.Finished(Outcome{ID: t.ID, Error: err.Error(), Request: t.Request})
			b.done(t.ID)
		}
		b.Release(t.ID)
	}
}

// waitRoom waits until fewer than Window tasks are in flight.
func (b *JetStream) waitRoom(ctx context.Context) error {
	for {
		b.mu.Lock()
		n := len(b.inflight)
		b.mu.Unlock()
		if n < b.q.opts.Window {
			return nil
		}
		select {
		case <-b.room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (b *JetStream) done(id string) {
	b.mu.Lock()
	delete(b.inflight, id)
	b.mu.Unlock()
	select {
	case b.room <- struct{}{}:
	default:
	}
}

// publish puts a task on the work queue (large ones through the object
// store), deduplicated by its id.
func (q *queue) publish(ctx context.Context, t Task) error {
	data, err := q.encode(ctx, t)
	if err != nil {
		return err
	}
	token := modelToken(t.Request.Model)
	// The consumer exists before the task does, so that a worker that
	// sees the subject can fetch from it.
	if _, err := q.consumer(ctx, token); err != nil {
		return err
	}
	if _, err := q.js.Publish(ctx, jobSubject+"."+token, data, jetstream.WithMsgID(t.ID)); err != nil {
		return fmt.Errorf("publish task: %w", err)
	}
	q.nc.Publish(queuedSubject, nil)
	return nil
}

// encode is a task as a message: its JSON, or a stub naming the object
// store entry of a task too large for a message.
func (q *queue) encode(ctx context.Context, t Task) ([]byte, error) {
	data, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("encode task: %w", err)
	}
	if len(data) > inlineTaskLimit {
		if _, err := q.blobs.PutBytes(ctx, "task."+t.ID, data); err != nil {
			return nil, fmt.Errorf("store task: %w", err)
		}
		data, _ = json.Marshal(taskStub{ID: t.ID, Stored: true})
	}
	return data, nil
}

// giveUp stores a failed outcome for the task at stream sequence seq,
// which JetStream delivered MaxDeliver times without an acknowledgement,
// and removes it from the stream.
func (q *queue) giveUp(ctx context.Context, seq uint64) {
	st := q.jobs
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		return
	}
	t, err := q.task(ctx, m.Data)
	if err != nil {
		return
	}
	o := Outcome{ID: t.ID, Client: t.Client, Request: t.Request,
		Error: fmt.Sprintf("delivered to workers %d times and never finished (did it stop the workers that took it?)", q.opts.MaxDeliver)}
	if q.store(ctx, o) == nil {
		st.DeleteMsg(ctx, seq)
	}
}

// outcome reads a stored outcome.
func (q *queue) outcome(ctx context.Context, id string) (Outcome, error) {
	data, err := q.blobs.GetBytes(ctx, "result."+id)
	if err != nil {
		return Outcome{}, fmt.Errorf("read the result of job %s: %w", id, err)
	}
	var o Outcome
	if err := json.Unmarshal(data, &o); err != nil {
		return Outcome{}, fmt.Errorf("decode the result of job %s: %w", id, err)
	}
	return o, nil
}

// Cancel marks the task cancelled (a worker that has not started it skips
// it) and tells the worker running it to stop.
func (b *JetStream) Cancel(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.q.kv.Put(ctx, "cancel."+id, []byte("1"))
	b.q.nc.Publish(cancelSubject, []byte(id))
}

// Workers lists the workers heard from in the last three heartbeats.
func (b *JetStream) Workers() []WorkerInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []WorkerInfo
	for name, w := range b.workers {
		if time.Since(w.at) > 3*heartbeatEvery {
			delete(b.workers, name)
			continue
		}
		out = append(out, w.info)
	}
	return out
}

// Unload tells every worker to free its models; it returns -1 (the count
// is not known here).
func (b *JetStream) Unload() int {
	b.q.nc.Publish(unloadSubject, nil)
	return -1
}

// Stored returns the stored outcome of job id, if there is one: jobs
// taken before the server restarted stay readable.
func (b *JetStream) Stored(ctx context.Context, id string) (Outcome, bool) {
	if _, err := b.q.kv.Get(ctx, "result."+id); err != nil {
		return Outcome{}, false
	}
	o, err := b.q.outcome(ctx, id)
	return o, err == nil
}

// has reports whether the server knows job id.
func (s *Server) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.jobs[id]
	return ok
}

// RunWorker takes tasks from the JetStream work queue on nc and runs them
// on r, one at a time, until ctx ends. A task is acknowledged only once
// its outcome is stored; a worker that dies mid-task leaves it to be
// redelivered after AckWait. A task whose outcome is already stored (run
// by a worker that died before acknowledging) is acknowledged without
// running again.
func RunWorker(ctx context.Context, nc *nats.Conn, r *Runner, opts JetStreamOptions) error {
	q, err := openQueue(ctx, nc, opts)
	if err != nil {
		return err
	}
	opts = q.opts
	wake := make(chan struct{}, 1)
	queued, err := nc.Subscribe(queuedSubject, func(*nats.Msg) {
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("nats subscribe: %w", err)
	}
	defer queued.Unsubscribe()
	var mu sync.Mutex
	running, stop := "", context.CancelFunc(nil)
	cancels, err := nc.Subscribe(cancelSubject, func(m *nats.Msg) {
		mu.Lock()
		if string(m.Data) == running && stop != nil {
			stop()
		}
		mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("nats subscribe: %w", err)
	}
	defer cancels.Unsubscribe()
	unload, err := nc.Subscribe(unloadSubject, func(*nats.Msg) { r.Engine.Unload() })
	if err != nil {
		return fmt.Errorf("nats subscribe: %w", err)
	}
	defer unload.Unsubscribe()
	beat := func() {
		mu.Lock()
		w := WorkerInfo{Name: r.Name, Device: r.Engine.Device().Name(), Busy: running, Loaded: r.Engine.Loaded(), Remote: true}
		mu.Unlock()
		data, _ := json.Marshal(w)
		nc.Publish(workerSubject, data)
	}
	go func() {
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			beat()
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	for ctx.Err() == nil {
		msg, err := q.take(ctx, r.Engine.Loaded())
		if err != nil && ctx.Err() == nil {
			opts.Log.Warn("fetch", "error", err)
		}
		if msg == nil {
			select {
			case <-wake:
			case <-time.After(idlePoll):
			case <-ctx.Done():
			}
			continue
		}
		t, err := q.task(ctx, msg.Data())
		if err != nil {
			opts.Log.Error("bad task, dropped", "error", err)
			msg.Term()
			continue
		}
		jctx, cancel := context.WithCancel(ctx)
		mu.Lock()
		running, stop = t.ID, cancel
		mu.Unlock()
		beat()
		q.handle(jctx, ctx, msg, t, r)
		cancel()
		mu.Lock()
		running, stop = "", nil
		mu.Unlock()
		beat()
	}
	return ctx.Err()
}

// task decodes a job message.
func (q *queue) task(ctx context.Context, data []byte) (Task, error) {
	var stub taskStub
	if err := json.Unmarshal(data, &stub); err != nil {
		return Task{}, fmt.Errorf("decode task: %w", err)
	}
	if stub.Stored {
		b, err := q.blobs.GetBytes(ctx, "task."+stub.ID)
		if err != nil {
			return Task{}, fmt.Errorf("read task %s: %w", stub.ID, err)
		}
		data = b
	}
	var t Task
	if err := json.Unmarshal(data, &t); err != nil {
		return Task{}, fmt.Errorf("decode task: %w", err)
	}
	return t, nil
}

// handle runs one delivered task. jctx is the task's context (cancelled
// by a cancel), ctx the worker's (cancelled when it stops: the task is
// handed back).
func (q *queue) handle(jctx, ctx context.Context, msg jetstream.Msg, t Task, r *Runner) {
	log := q.opts.Log.With("id", t.ID, "worker", r.Name)
	if _, err := q.kv.Get(ctx, "result."+t.ID); err == nil {
		log.Info("job already done, acknowledged")
		msg.Ack()
		return
	}
	var o Outcome
	if _, err := q.kv.Get(ctx, "cancel."+t.ID); err == nil {
		o = Outcome{ID: t.ID, Client: t.Client, Cancelled: true, Error: "cancelled before it ran", Request: t.Request, Worker: r.Name}
	} else {
		// Tell JetStream the task is alive while it runs.
		alive := make(chan struct{})
		go func() {
			tick := time.NewTicker(q.opts.AckWait / 3)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					msg.InProgress()
				case <-alive:
					return
				}
			}
		}()
		log.Info("job start")
		o = r.Run(jctx, t, func(p Progress) {
			if data, err := json.Marshal(p); err == nil {
				q.nc.Publish(progressPrefix+t.ID, data)
			}
		})
		close(alive)
	}
	if ctx.Err() != nil {
		// The worker stops: another one runs the task.
		msg.Nak()
		return
	}
	if err := q.store(ctx, o); err != nil {
		log.Error("store result", "error", err)
		msg.Nak()
		return
	}
	if q.opts.stored != nil {
		q.opts.stored(t.ID)
	}
	if err := msg.DoubleAck(ctx); err != nil {
		log.Warn("ack", "error", err)
	}
	log.Info("job stored", "error", o.Error)
}

// store writes an outcome, then marks it stored; a second outcome of the
// same task (a redelivered task whose first worker died after storing)
// finds the mark and changes nothing.
func (q *queue) store(ctx context.Context, o Outcome) error {
	data, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("encode outcome: %w", err)
	}
	if _, err := q.kv.Get(ctx, "result."+o.ID); err == nil {
		return nil
	}
	if _, err := q.blobs.PutBytes(ctx, "result."+o.ID, data); err != nil {
		return fmt.Errorf("store outcome: %w", err)
	}
	if _, err := q.kv.Create(ctx, "result."+o.ID, []byte(o.Worker)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("mark outcome: %w", err)
	}
	return nil
}

// Dial connects to the NATS server at url (with token, when not empty),
// reconnecting for ever when the connection drops.
func Dial(url, token string) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("darkroom"), nats.MaxReconnects(-1)}
	if token != "" {
		opts = append(opts, nats.Token(token))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("--nats %s: %w", url, err)
	}
	return nc, nil
}

// EmbeddedOptions configure an embedded nats-server.
type EmbeddedOptions struct {
	// Listen is HOST:PORT for NATS clients (default 127.0.0.1 on a free
	// port); other machines' workers join through it.
	Listen string
	// StoreDir holds JetStream's files: tasks and results survive a
	// restart.
	StoreDir string
	// Token, when set, is required of NATS clients.
	Token string
}

// StartEmbedded starts a nats-server with JetStream in this process.
// Shut it down with Shutdown; its ClientURL is what workers join.
func StartEmbedded(o EmbeddedOptions) (*natsserver.Server, error) {
	host, port := "127.0.0.1", -1
	if o.Listen != "" {
		h, p, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("--nats-listen %s: %w", o.Listen, err)
		}
		if port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("--nats-listen %s: port %q: not a number", o.Listen, p)
		}
		host = h
		// The server binds in the background; a taken port is clearer
		// said here.
		ln, err := net.Listen("tcp", o.Listen)
		if err != nil {
			return nil, fmt.Errorf("--nats-listen %s: %w (another darkroom serve? give another --nats-listen, or join it with --nats)", o.Listen, err)
		}
		ln.Close()
	}
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: host, Port: port, JetStream: true, StoreDir: o.StoreDir, NoSigs: true, NoLog: true,
		MaxPayload: 8 << 20, Authorization: o.Token,
	})
	if err != nil {
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats-server on %s:%d did not start", host, port)
	}
	return ns, nil
}
