// Package server is `darkroom serve`: a JSON HTTP API over the engine. It
// speaks A1111's API where clients rely on it (/sdapi/v1/txt2img, img2img,
// sd-models, samplers, schedulers, options, progress, interrupt) and its own
// (/v1/jobs with the engine Request as JSON, a Server-Sent Events progress
// stream, /v1/models, /v1/devices, /v1/admin/...). Jobs wait in a bounded
// queue that serves clients round-robin, and run on workers: one per device
// in process, or any number on other machines through a NATS JetStream
// work queue (nats.go).
package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

// Token is a bearer token and the client it identifies.
type Token struct {
	// Name is the client's name: jobs belong to it, fairness is between
	// names, and only it may cancel its jobs.
	Name   string
	Secret string
	// Admin tokens may use /v1/admin/... and cancel any job.
	Admin bool
}

// Limits bound what one request may ask for.
type Limits struct {
	// MaxBody is the largest request body in bytes (default 32 MiB).
	MaxBody int64
	// MaxPixels bounds width×height of an image, hires fix included
	// (default 2048×2048).
	MaxPixels int
	// MaxSteps bounds the sampling steps (default 150).
	MaxSteps int
	// MaxBatch bounds the images of one request (default 8).
	MaxBatch int
}

// Options configure a Server.
type Options struct {
	// Tokens are the accepted bearer tokens. With none, every caller is
	// let in as an admin, which ListenAndServe allows only on a loopback
	// address.
	Tokens []Token
	// ModelDirs are the model directories; requests name models and other
	// files only inside them.
	ModelDirs []string
	// Limits bound the requests.
	Limits Limits
	// QueueSize bounds the jobs waiting for a worker (default 64); a
	// request beyond it gets 429.
	QueueSize int
	// KeepJobs is how many finished jobs stay readable (default 1000).
	KeepJobs int
	// DefaultModel is the model of A1111 requests that name none ("": the
	// built-in model).
	DefaultModel string
	// Log receives one line per job and per refused request (nil: none).
	Log *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Limits.MaxBody <= 0 {
		o.Limits.MaxBody = 32 << 20
	}
	if o.Limits.MaxPixels <= 0 {
		o.Limits.MaxPixels = 2048 * 2048
	}
	if o.Limits.MaxSteps <= 0 {
		o.Limits.MaxSteps = 150
	}
	if o.Limits.MaxBatch <= 0 {
		o.Limits.MaxBatch = 8
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 64
	}
	if o.KeepJobs <= 0 {
		o.KeepJobs = 1000
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// Job states.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateDone      = "done"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
)

// job is a request the server took. Server.mu guards its fields.
type job struct {
	ID, Client string
	Task       Task
	created    time.Time
	started    time.Time
	finished   time.Time
	state      string
	worker     string
	phase      string
	step       int
	total      int
	preview    []byte
	out        *Outcome
	// cancel stops the job where it runs (set by the backend).
	cancel context.CancelFunc
	// changed is closed and replaced on every change (SSE streams wait on
	// it); done is closed when the job ends.
	changed chan struct{}
	done    chan struct{}
}

func (j *job) ended() bool {
	return j.state == StateDone || j.state == StateFailed || j.state == StateCancelled
}

// Backend runs the server's jobs: in process (Local) or on JetStream
// workers (JetStream).
type Backend interface {
	// Serve takes jobs from the server's queue (Server.Next) and reports
	// them (Started, Progressed, Finished) until ctx ends.
	Serve(ctx context.Context, s *Server) error
	// Cancel stops job id where it runs.
	Cancel(id string)
	// Workers describes the workers.
	Workers() []WorkerInfo
	// Unload frees the workers' models; it returns how many were freed
	// (-1 when the workers are elsewhere and only told to).
	Unload() int
}

// durableQueue is a backend that keeps the jobs the server has accepted
// beyond its memory (JetStream), including those still waiting in its
// fair queue: a restarted server finds every job it took again.
type durableQueue interface {
	// Hold stores a task the server accepts, before it answers for it.
	Hold(ctx context.Context, t Task) error
	// Release forgets a held task: it was cancelled while it waited (the
	// backend releases the tasks it takes from the queue itself).
	Release(id string)
	// Held returns the tasks held when the server last stopped: those
	// that waited, in the order they came, and those handed to the
	// workers that have no outcome yet. New calls it before Serve.
	Held(ctx context.Context) (waiting, handed []Task, err error)
}

// resultStore is a backend that keeps outcomes beyond the server's memory
// (JetStream): a job taken before a restart is found there.
type resultStore interface {
	Stored(ctx context.Context, id string) (Outcome, bool)
}

// WorkerInfo describes a worker for /v1/devices.
type WorkerInfo struct {
	Name   string   `json:"name"`
	Device string   `json:"device"`
	Busy   string   `json:"busy,omitempty"` // the job it runs
	Loaded []string `json:"loaded,omitempty"`
	// Remote is true for workers seen through JetStream.
	Remote bool `json:"remote,omitempty"`
}

// Server is the HTTP API. Create it with New, serve its Handler, and
// Close it.
type Server struct {
	opts    Options
	catalog *engine.Engine // lists and resolves models; runs nothing
	queue   *fairQueue
	back    Backend
	mux     *http.ServeMux

	mu       sync.Mutex
	jobs     map[string]*job
	finished []string          // ended job ids, oldest first
	models   map[string]string // per-client A1111 model (/sdapi/v1/options)

	ctx       context.Context
	stop      context.CancelFunc
	served    chan error
	closeOnce sync.Once
	closeErr  error
}

// New creates a server whose jobs run on back. It starts the backend.
func New(opts Options, back Backend) (*Server, error) {
	opts.setDefaults()
	for _, t := range opts.Tokens {
		if t.Secret == "" || t.Name == "" {
			return nil, fmt.Errorf("token %q: a name and a secret are needed", t.Name)
		}
	}
	cat, err := engine.Open(engine.Options{Device: "cpu", ModelDirs: opts.ModelDirs, NamesOnly: true})
	if err != nil {
		return nil, fmt.Errorf("model catalog: %w", err)
	}
	s := &Server{
		opts: opts, catalog: cat, queue: newFairQueue(opts.QueueSize), back: back,
		jobs: map[string]*job{}, models: map[string]string{}, served: make(chan error, 1),
	}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.routes()
	if d, ok := back.(durableQueue); ok {
		if err := s.restore(d); err != nil {
			cat.Close()
			return nil, err
		}
	}
	go func() { s.served <- back.Serve(s.ctx, s) }()
	return s, nil
}

// restore takes back the jobs a durable backend held when the server
// last stopped: the waiting ones join the fair queue in the order they
// came (beyond its bound, if need be: none is dropped), the handed-out
// ones wait for their outcome.
func (s *Server) restore(d durableQueue) error {
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	waiting, handed, err := d.Held(ctx)
	if err != nil {
		return fmt.Errorf("the jobs queued before the restart: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	add := func(t Task) *job {
		j := newJob(t)
		s.jobs[j.ID] = j
		return j
	}
	for _, t := range handed {
		add(t)
	}
	for _, t := range waiting {
		s.queue.pushAlways(add(t))
	}
	if n := len(waiting) + len(handed); n > 0 {
		s.opts.Log.Info("jobs taken back after a restart", "waiting", len(waiting), "running", len(handed))
	}
	return nil
}

// Close stops the backend and cancels the jobs that wait or run.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		err := <-s.served
		if errors.Is(err, context.Canceled) {
			err = nil
		}
		s.catalog.Close()
		s.closeErr = err
	})
	return s.closeErr
}

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler { return s.mux }

// ListenAndServe serves the API on addr until ctx ends. Without tokens it
// refuses an address that is not loopback.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	if len(s.opts.Tokens) == 0 && !IsLoopback(addr) {
		return fmt.Errorf("--listen %s: not a loopback address, so a --token is required", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves the API on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}()
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// IsLoopback reports whether a listen address binds only the loopback
// interface ("127.0.0.1:7860", "[::1]:7860", "localhost:7860"); an empty
// host (all interfaces) is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// caller is who made a request.
type caller struct {
	name  string
	admin bool
}

// ClientHeader names a sub-client of the caller ("bot-1"): jobs of
// different sub-clients of one token are served round-robin, and a
// sub-client cancels only its own jobs. Without tokens (loopback) it is
// the only way to tell clients apart.
const ClientHeader = "X-Darkroom-Client"

// authenticate finds the caller of r, or answers 401 and returns false.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (caller, bool) {
	var c caller
	if len(s.opts.Tokens) == 0 {
		c = caller{name: "local", admin: true}
	} else {
		h := r.Header.Get("Authorization")
		secret, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="darkroom"`)
			s.fail(w, r, http.StatusUnauthorized, "missing bearer token: send Authorization: Bearer TOKEN")
			return caller{}, false
		}
		found := false
		for _, t := range s.opts.Tokens {
			if subtle.ConstantTimeCompare([]byte(secret), []byte(t.Secret)) == 1 {
				c, found = caller{name: t.Name, admin: t.Admin}, true
			}
		}
		if !found {
			w.Header().Set("WWW-Authenticate", `Bearer realm="darkroom", error="invalid_token"`)
			s.fail(w, r, http.StatusUnauthorized, "invalid bearer token")
			return caller{}, false
		}
	}
	if sub := r.Header.Get(ClientHeader); sub != "" {
		if len(sub) > 64 || strings.ContainsAny(sub, "/\x00\r\n") {
			s.fail(w, r, http.StatusBadRequest, ClientHeader+": at most 64 characters, no '/'")
			return caller{}, false
		}
		c.name += "/" + sub
	}
	return c, true
}

// owns reports whether c may act on a job of client owner: its own, or
// one of its sub-clients'; admins may act on every job.
func (c caller) owns(owner string) bool {
	return c.admin || owner == c.name || strings.HasPrefix(owner, c.name+"/")
}

// newID returns a random job id.
func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newJob is a queued job of task t (its ID and Client set).
func newJob(t Task) *job {
	return &job{ID: t.ID, Client: t.Client, Task: t, created: time.Now(), state: StateQueued,
		changed: make(chan struct{}), done: make(chan struct{})}
}

// submit validates a task and queues it as a job of client; the error is
// an *httpError.
func (s *Server) submit(client string, t Task) (*job, error) {
	if err := s.check(&t); err != nil {
		return nil, err
	}
	t.ID, t.Client = newID(), client
	j := newJob(t)
	full := func() error {
		return &httpError{status: http.StatusTooManyRequests, msg: fmt.Sprintf("%v: %d jobs wait; try again later", errQueueFull, s.opts.QueueSize)}
	}
	d, durable := s.back.(durableQueue)
	if durable {
		// Kept before it is answered for: an accepted job survives a
		// restart. A full queue is refused before it is kept.
		if s.queue.len() >= s.opts.QueueSize {
			return nil, full()
		}
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		err := d.Hold(ctx, t)
		cancel()
		if err != nil {
			return nil, &httpError{status: http.StatusServiceUnavailable, msg: err.Error()}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.queue.push(j); err != nil {
		if durable {
			go d.Release(j.ID)
		}
		return nil, full()
	}
	s.jobs[j.ID] = j
	s.opts.Log.Info("job queued", "id", j.ID, "client", client, "model", t.Request.Model)
	return j, nil
}

// check validates a task against the engine's field checks and the
// server's limits, and resolves its model (so that a bad name is a 400
// now, not a failed job later).
func (s *Server) check(t *Task) error {
	req := &t.Request
	// The init image and mask travel as bytes; a path is never read.
	if req.InitImage != "" || req.Mask != "" {
		return &httpError{status: http.StatusBadRequest, msg: "init_image and mask are images (base64), not paths"}
	}
	if t.InitImage != nil {
		req.InitImage = "init.png" // for Validate: an img2img request
	}
	if t.Mask != nil {
		req.Mask = "mask.png"
	}
	if req.Width == 0 && req.Height == 0 && req.InitImage != "" {
		req.Width, req.Height = 8, 8 // the image's size, checked by the worker
		defer func() { req.Width, req.Height = 0, 0 }()
	}
	err := req.Validate()
	req.InitImage, req.Mask = "", ""
	if err != nil {
		return badField(err)
	}
	l := s.opts.Limits
	if req.Steps > l.MaxSteps || req.HiresSteps > l.MaxSteps {
		return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf("steps %d: this server allows at most %d", max(req.Steps, req.HiresSteps), l.MaxSteps)}
	}
	if req.Batch > l.MaxBatch {
		return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf("batch %d: this server allows at most %d images a request", req.Batch, l.MaxBatch)}
	}
	// A size the client left out is the model's, checked by the worker.
	t.MaxPixels = l.MaxPixels
	if slices.Contains(t.Given, "width") || slices.Contains(t.Given, "height") {
		if err := checkPixels(*req, l.MaxPixels); err != nil {
			return &httpError{status: http.StatusBadRequest, msg: err.Error()}
		}
	}
	for _, img := range [][]byte{t.InitImage, t.Mask} {
		if img == nil {
			continue
		}
		iw, ih, err := imageSize(img)
		if err != nil {
			return &httpError{status: http.StatusBadRequest, msg: err.Error()}
		}
		if iw*ih > l.MaxPixels {
			return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf("init image %dx%d: this server allows at most %d pixels an image", iw, ih, l.MaxPixels)}
		}
	}
	if _, err := s.catalog.Resolve(req.Model); err != nil {
		return badField(err)
	}
	if req.Refiner != "" {
		if _, err := s.catalog.Resolve(req.Refiner); err != nil {
			return badField(fmt.Errorf("refiner: %w", err))
		}
	}
	return nil
}

// checkPixels checks a request's image size (hires fix included) against
// a bound of pixels an image.
func checkPixels(req engine.Request, maxPixels int) error {
	w, h := float64(req.Width), float64(req.Height)
	if req.Hires > 1 {
		w, h = w*req.Hires, h*req.Hires
	}
	if maxPixels > 0 && w*h > float64(maxPixels) {
		return &engine.FieldError{Field: "width", Value: req.Width, Msg: fmt.Sprintf("size %.0fx%.0f: this server allows at most %d pixels an image", w, h, maxPixels)}
	}
	return nil
}

// Next waits for the next job a worker should run, in the fair order, and
// returns its task. A worker that has models loaded passes their names in
// loaded: a job for one of them is preferred. Backends call it.
func (s *Server) Next(ctx context.Context, loaded []string) (Task, error) {
	var prefer func(*job) bool
	if len(loaded) > 0 {
		prefer = func(j *job) bool { return slices.Contains(loaded, modelKey(j.Task.Request.Model)) }
	}
	j, err := s.queue.pop(ctx, prefer)
	if err != nil {
		return Task{}, err
	}
	return j.Task, nil
}

// modelKey is a request's model as workers name the models they have
// loaded (engine.Engine.Loaded): the default model's name for "", no
// .safetensors extension.
func modelKey(model string) string {
	if model == "" {
		model = engine.DefaultModel
	}
	return strings.TrimSuffix(model, ".safetensors")
}

// Started marks job id as running on worker; cancel, when not nil, stops
// it there. It returns false when the job should not run (cancelled, or
// unknown).
func (s *Server) Started(id, worker string, cancel context.CancelFunc) bool {
	run := false
	s.update(id, func(j *job) {
		if j.state == StateQueued {
			j.state, j.worker, j.started = StateRunning, worker, time.Now()
			run = true
		}
		if cancel != nil {
			j.cancel = cancel
		}
	})
	if !run {
		s.Finished(Outcome{ID: id, Cancelled: true, Error: "cancelled before it ran"})
	}
	return run
}

// Progressed records a progress report of a running job.
func (s *Server) Progressed(p Progress) {
	s.update(p.ID, func(j *job) {
		if j.ended() {
			return
		}
		if j.state == StateQueued {
			j.state, j.started = StateRunning, time.Now()
		}
		j.worker, j.phase = p.Worker, p.Phase
		if p.Total > 0 { // the sampling steps; other phases keep the last
			j.step, j.total = p.Step, p.Total
		}
		if p.Preview != nil {
			j.preview = p.Preview
		}
	})
}

// Finished records a job's outcome; a second outcome for the same job is
// ignored (a job ends once).
func (s *Server) Finished(o Outcome) {
	s.update(o.ID, func(j *job) {
		if j.out != nil {
			return
		}
		j.out = &o
		j.finished = time.Now()
		switch {
		case o.Error == "" && !o.Cancelled:
			j.state = StateDone
		case o.Cancelled || j.state == StateCancelled:
			j.state = StateCancelled
		default:
			j.state = StateFailed
		}
		if o.Worker != "" {
			j.worker = o.Worker
		}
		j.cancel = nil
		close(j.done)
		s.finished = append(s.finished, j.ID)
		for len(s.finished) > s.opts.KeepJobs {
			delete(s.jobs, s.finished[0])
			s.finished = s.finished[1:]
		}
		s.opts.Log.Info("job "+j.state, "id", j.ID, "client", j.Client, "worker", j.worker, "error", o.Error)
	})
}

// update applies f to job id under the lock and wakes its watchers.
func (s *Server) update(id string, f func(*job)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return
	}
	f(j)
	close(j.changed)
	j.changed = make(chan struct{})
}

// cancelJob cancels job j for c: a waiting job leaves the queue, a running
// one is stopped by its worker. It returns an *httpError when c may not.
func (s *Server) cancelJob(c caller, j *job) error {
	if !c.owns(j.Client) {
		return &httpError{status: http.StatusForbidden, msg: fmt.Sprintf("job %s belongs to another client", j.ID)}
	}
	s.mu.Lock()
	if j.ended() {
		s.mu.Unlock()
		return nil
	}
	queued := s.queue.remove(j)
	cancel := j.cancel
	s.mu.Unlock()
	if queued {
		if d, ok := s.back.(durableQueue); ok {
			d.Release(j.ID)
		}
		s.Finished(Outcome{ID: j.ID, Cancelled: true, Error: "cancelled before it ran", Request: j.Task.Request})
		return nil
	}
	s.update(j.ID, func(j *job) { j.state = StateCancelled })
	if cancel != nil {
		cancel()
	}
	s.back.Cancel(j.ID)
	return nil
}
