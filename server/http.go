package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	// The decoders an init image may use.
	_ "image/gif"
	_ "image/jpeg"
	_ "image/png"

	"github.com/darkroom-ai/darkroom/engine"
)

// httpError is an error with its HTTP status.
type httpError struct {
	status int
	msg    string
	field  string // the request field at fault, if one is
}

func (e *httpError) Error() string { return e.msg }

// badField turns a request validation error into a 400 naming the field.
func badField(err error) error {
	he := &httpError{status: http.StatusBadRequest, msg: err.Error()}
	var fe *engine.FieldError
	if errors.As(err, &fe) {
		he.field = fe.Field
	}
	return he
}

// errorBody is the JSON of every error answer. Detail repeats the message
// under the key A1111's API uses.
type errorBody struct {
	Error  string `json:"error"`
	Detail string `json:"detail"`
	Field  string `json:"field,omitempty"`
}

// fail answers an error with its status, as JSON.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.failField(w, r, status, msg, "")
}

// failField is fail naming the request field at fault.
func (s *Server) failField(w http.ResponseWriter, r *http.Request, status int, msg, field string) {
	s.opts.Log.Info("refused", "method", r.Method, "path", r.URL.Path, "status", status, "error", msg)
	writeJSON(w, status, errorBody{Error: msg, Detail: msg, Field: field})
}

// failErr answers err: its status when it is an *httpError, else 500.
func (s *Server) failErr(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	if errors.As(err, &he) {
		if he.status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "5")
		}
		s.failField(w, r, he.status, he.msg, he.field)
		return
	}
	s.fail(w, r, http.StatusInternalServerError, err.Error())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}

// decodeBody reads r's JSON body (at most Limits.MaxBody bytes) into v.
// Strict bodies refuse unknown keys (darkroom's own API); A1111 bodies
// carry many keys darkroom has no use for. It returns the body's keys.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any, strict bool) (map[string]json.RawMessage, error) {
	body := http.MaxBytesReader(w, r.Body, s.opts.Limits.MaxBody)
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(body); err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return nil, &httpError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("request body over %d bytes", s.opts.Limits.MaxBody)}
		}
		return nil, &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf("reading the body: %v", err)}
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &keys); err != nil {
		return nil, &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf("body: not a JSON object: %v", err)}
	}
	dec := json.NewDecoder(&buf)
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf("body: %s: want a %s, got a JSON %s", te.Field, te.Type, te.Value)}
		}
		return nil, &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf("body: %v", err)}
	}
	return keys, nil
}

// decodeImage decodes a base64 image (a bare string or a data: URL) and
// checks that it is a PNG, JPEG or GIF.
func decodeImage(field, s string) ([]byte, error) {
	if _, rest, ok := strings.Cut(s, ";base64,"); ok && strings.HasPrefix(s, "data:") {
		s = rest
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf("%s: not base64: %v", field, err)}
	}
	if _, _, err := imageSize(b); err != nil {
		return nil, &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf("%s: %v", field, err)}
	}
	return b, nil
}

// imageSize reads an encoded image's size.
func imageSize(b []byte) (int, int, error) {
	cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return 0, 0, fmt.Errorf("not a PNG, JPEG or GIF image")
	}
	return cfg.Width, cfg.Height, nil
}

// routes registers every route.
func (s *Server) routes() {
	s.mux = http.NewServeMux()
	handle := func(pattern string, admin bool, h func(http.ResponseWriter, *http.Request, caller)) {
		s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			c, ok := s.authenticate(w, r)
			if !ok {
				return
			}
			if admin && !c.admin {
				s.fail(w, r, http.StatusForbidden, "an admin token is needed")
				return
			}
			h(w, r, c)
		})
	}
	handle("POST /v1/jobs", false, s.postJob)
	handle("GET /v1/jobs", false, s.listJobs)
	handle("GET /v1/jobs/{id}", false, s.getJob)
	handle("GET /v1/jobs/{id}/events", false, s.jobEvents)
	handle("GET /v1/jobs/{id}/images/{n}", false, s.jobImage)
	handle("DELETE /v1/jobs/{id}", false, s.deleteJob)
	handle("GET /v1/models", false, s.getModels)
	handle("GET /v1/devices", false, s.getDevices)
	handle("GET /v1/admin/probe", true, s.adminProbe)
	handle("POST /v1/admin/unload", true, s.adminUnload)
	handle("GET /v1/admin/families", true, s.adminFamilies)
	handle("GET /v1/admin/queue", true, s.adminQueue)
	handle("GET /v1/queue", false, s.getQueue)

	handle("POST /sdapi/v1/txt2img", false, s.a1111Txt2Img)
	handle("POST /sdapi/v1/img2img", false, s.a1111Img2Img)
	handle("GET /sdapi/v1/sd-models", false, s.a1111Models)
	handle("GET /sdapi/v1/samplers", false, s.a1111Samplers)
	handle("GET /sdapi/v1/schedulers", false, s.a1111Schedulers)
	handle("GET /sdapi/v1/options", false, s.a1111GetOptions)
	handle("POST /sdapi/v1/options", false, s.a1111SetOptions)
	handle("GET /sdapi/v1/progress", false, s.a1111Progress)
	handle("POST /sdapi/v1/interrupt", false, s.a1111Interrupt)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.authenticate(w, r); ok {
			s.fail(w, r, http.StatusNotFound, fmt.Sprintf("%s %s: no such route (see docs/serve.md)", r.Method, r.URL.Path))
		}
	})
}

// jobBody is POST /v1/jobs: the engine Request, with the init image and
// mask as base64 images instead of paths.
type jobBody struct {
	engine.Request
	InitImage string `json:"init_image,omitempty"`
	Mask      string `json:"mask,omitempty"`
}

// jobView is a job as the API shows it.
type jobView struct {
	ID       string `json:"id"`
	Client   string `json:"client"`
	State    string `json:"state"`
	Position int    `json:"position,omitempty"` // jobs before it, while queued
	Worker   string `json:"worker,omitempty"`
	Phase    string `json:"phase,omitempty"`
	Step     int    `json:"step,omitempty"`
	Total    int    `json:"total,omitempty"`
	// Preview is the latest latent preview (base64 PNG) while it runs.
	Preview   []byte          `json:"preview,omitempty"`
	Images    [][]byte        `json:"images,omitempty"`
	Infotexts []string        `json:"infotexts,omitempty"`
	Error     string          `json:"error,omitempty"`
	Field     string          `json:"field,omitempty"`
	Request   *engine.Request `json:"request,omitempty"`
	Created   time.Time       `json:"created"`
	Started   *time.Time      `json:"started,omitempty"`
	Finished  *time.Time      `json:"finished,omitempty"`
}

// view snapshots j; images only when withImages. Call with s.mu held.
func (s *Server) view(j *job, withImages bool) jobView {
	v := jobView{ID: j.ID, Client: j.Client, State: j.state, Worker: j.worker, Phase: j.phase, Step: j.step, Total: j.total, Created: j.created}
	if j.state == StateQueued {
		// A job handed to the JetStream queue has left the fair queue
		// (position -1): it is next, as far as this server knows.
		v.Position = max(s.queue.position(j), 0)
	}
	if j.state == StateRunning {
		v.Preview = j.preview
	}
	if !j.started.IsZero() {
		t := j.started
		v.Started = &t
	}
	if !j.finished.IsZero() {
		t := j.finished
		v.Finished = &t
	}
	req := j.Task.Request
	if o := j.out; o != nil {
		v.Error, v.Field = o.Error, o.Field
		if o.Error == "" {
			req = o.Request
		}
		if withImages {
			v.Images = o.Images
		}
		v.Infotexts = o.Infotexts
	}
	v.Request = &req
	return v
}

func (s *Server) postJob(w http.ResponseWriter, r *http.Request, c caller) {
	body := jobBody{Request: engine.DefaultRequest()}
	keys, err := s.decodeBody(w, r, &body, true)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	t := Task{Request: body.Request}
	for k := range keys {
		t.Given = append(t.Given, k)
	}
	slices.Sort(t.Given)
	if !slices.Contains(t.Given, "seed") {
		t.Request.Seed = uint64(rand.Uint32()) // as `darkroom gen` without --seed
		t.Given = append(t.Given, "seed")
	}
	if body.InitImage != "" {
		if t.InitImage, err = decodeImage("init_image", body.InitImage); err != nil {
			s.failErr(w, r, err)
			return
		}
	}
	if body.Mask != "" {
		if t.Mask, err = decodeImage("mask", body.Mask); err != nil {
			s.failErr(w, r, err)
			return
		}
	}
	j, err := s.submit(c.name, t)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.mu.Lock()
	v := s.view(j, false)
	s.mu.Unlock()
	w.Header().Set("Location", "/v1/jobs/"+j.ID)
	writeJSON(w, http.StatusAccepted, v)
}

// lookup finds the job of the route's {id} that c may see, or answers.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request, c caller) (*job, bool) {
	id := r.PathValue("id")
	s.mu.Lock()
	j, ok := s.jobs[id]
	s.mu.Unlock()
	if rs, isStore := s.back.(resultStore); !ok && isStore {
		if o, found := rs.Stored(r.Context(), id); found {
			j, ok = s.adopt(o), true
		}
	}
	if !ok {
		s.fail(w, r, http.StatusNotFound, fmt.Sprintf("job %s: no such job", id))
		return nil, false
	}
	if !c.owns(j.Client) {
		s.fail(w, r, http.StatusForbidden, fmt.Sprintf("job %s belongs to another client", id))
		return nil, false
	}
	return j, true
}

// adopt records a stored outcome of a job this server did not take (it
// was taken before a restart) as a finished job.
func (s *Server) adopt(o Outcome) *job {
	s.mu.Lock()
	j, ok := s.jobs[o.ID]
	if !ok {
		j = &job{ID: o.ID, Client: o.Client, Task: Task{ID: o.ID, Client: o.Client, Request: o.Request}, created: time.Now(),
			state: StateQueued, changed: make(chan struct{}), done: make(chan struct{})}
		s.jobs[o.ID] = j
	}
	s.mu.Unlock()
	if !ok {
		s.Finished(o)
	}
	return j
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request, c caller) {
	j, ok := s.lookup(w, r, c)
	if !ok {
		return
	}
	s.mu.Lock()
	v := s.view(j, r.URL.Query().Get("images") != "0")
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request, c caller) {
	s.mu.Lock()
	var out []jobView
	for _, j := range s.jobs {
		if c.owns(j.Client) && (j.Client == c.name || strings.HasPrefix(j.Client, c.name+"/") || r.URL.Query().Get("all") == "1") {
			out = append(out, s.view(j, false))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b jobView) int { return a.Created.Compare(b.Created) })
	writeJSON(w, http.StatusOK, map[string]any{"jobs": out, "queued": s.queue.len()})
}

func (s *Server) jobImage(w http.ResponseWriter, r *http.Request, c caller) {
	j, ok := s.lookup(w, r, c)
	if !ok {
		return
	}
	n, err := strconv.Atoi(strings.TrimSuffix(r.PathValue("n"), ".png"))
	s.mu.Lock()
	var img []byte
	if j.out != nil && err == nil && n >= 0 && n < len(j.out.Images) {
		img = j.out.Images[n]
	}
	s.mu.Unlock()
	if img == nil {
		s.fail(w, r, http.StatusNotFound, fmt.Sprintf("job %s: no image %s", j.ID, r.PathValue("n")))
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Write(img)
}

// jobEvents streams a job's progress as Server-Sent Events: a "progress"
// event (the job without images) on every change and every 15 s, then one
// "done" event with the images when it ends.
func (s *Server) jobEvents(w http.ResponseWriter, r *http.Request, c caller) {
	j, ok := s.lookup(w, r, c)
	if !ok {
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		s.fail(w, r, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	for {
		s.mu.Lock()
		ended := j.ended() && j.out != nil
		v := s.view(j, ended)
		changed := j.changed
		s.mu.Unlock()
		event := "progress"
		if ended {
			event = "done"
		}
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		fl.Flush()
		if ended {
			return
		}
		select {
		case <-changed:
		case <-keepAlive.C:
			// The state again: proxies do not close an idle stream
			// while the job waits.
		case <-r.Context().Done():
			return
		case <-s.ctx.Done():
			return
		}
	}
}

func (s *Server) deleteJob(w http.ResponseWriter, r *http.Request, c caller) {
	j, ok := s.lookup(w, r, c)
	if !ok {
		return
	}
	if err := s.cancelJob(c, j); err != nil {
		s.failErr(w, r, err)
		return
	}
	s.mu.Lock()
	v := s.view(j, false)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, v)
}

// modelView is a model of the model directories, as /v1/models lists it
// (by name: paths on the server are not shown).
type modelView struct {
	Name   string `json:"name"`
	File   string `json:"file,omitempty"`
	Size   int64  `json:"size"`
	Broken string `json:"broken,omitempty"`
}

func (s *Server) listModels() []modelView {
	var out []modelView
	for _, m := range s.catalog.ListModels() {
		v := modelView{Name: m.Name, Size: m.Size, Broken: m.Broken}
		if m.Path != engine.DefaultModel {
			v.File = baseName(m.Path)
		}
		out = append(out, v)
	}
	return out
}

func baseName(p string) string {
	if i := strings.LastIndexAny(p, `/\`); i >= 0 {
		return p[i+1:]
	}
	return p
}

func (s *Server) getModels(w http.ResponseWriter, r *http.Request, c caller) {
	writeJSON(w, http.StatusOK, map[string]any{"models": s.listModels()})
}

// Device is a compute device of the server's machine, as /v1/devices
// lists it.
type Device struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"` // "cuda" or "cpu"
	MemoryTotal uint64 `json:"memory_total"`
	MemoryFree  uint64 `json:"memory_free"`
}

func (s *Server) getDevices(w http.ResponseWriter, r *http.Request, c caller) {
	var devs []Device
	for _, d := range s.catalog.Devices() {
		devs = append(devs, Device{d.Name, d.Kind, d.MemoryTotal, d.MemoryFree})
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": devs, "workers": s.back.Workers(), "queued": s.queue.len()})
}

func (s *Server) adminProbe(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.URL.Query().Get("model")
	path, err := s.catalog.Resolve(name)
	if err != nil {
		s.failErr(w, r, badField(err))
		return
	}
	if path == engine.DefaultModel {
		writeJSON(w, http.StatusOK, map[string]any{"model": engine.DefaultModel, "builtin": true, "family": "SD1.x", "runnable": true})
		return
	}
	in, err := engine.Inspect(engine.ModelFiles{Model: path})
	if err != nil {
		s.fail(w, r, http.StatusUnprocessableEntity, fmt.Sprintf("%s: %v", name, strings.ReplaceAll(err.Error(), path, baseName(path))))
		return
	}
	type file struct {
		Name      string `json:"name"`
		Size      int64  `json:"size"`
		Component string `json:"component,omitempty"`
		Tensors   int    `json:"tensors"`
	}
	var files []file
	var params int64
	for _, f := range in.Files {
		files = append(files, file{baseName(f.Path), f.Size, f.Component, f.Tensors})
	}
	for _, t := range in.Tensors {
		n := int64(1)
		for _, d := range t.Shape {
			n *= int64(d)
		}
		params += n
	}
	out := map[string]any{
		"model": name, "layout": in.Layout, "files": files, "tensors": len(in.Tensors), "parameters": params,
		"metadata": in.Metadata, "family": in.Detection.Name(), "runnable": in.Detection.Runnable, "evidence": in.Detection.Evidence,
	}
	if in.DetectErr != nil {
		out["detect_error"] = in.DetectErr.Error()
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) adminUnload(w http.ResponseWriter, r *http.Request, c caller) {
	writeJSON(w, http.StatusOK, map[string]any{"unloaded": s.back.Unload()})
}

func (s *Server) adminFamilies(w http.ResponseWriter, r *http.Request, c caller) {
	writeJSON(w, http.StatusOK, map[string]any{"families": engine.Families()})
}

func (s *Server) adminQueue(w http.ResponseWriter, r *http.Request, c caller) {
	s.mu.Lock()
	var out []jobView
	for _, j := range s.jobs {
		if !j.ended() {
			out = append(out, s.view(j, false))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b jobView) int { return a.Created.Compare(b.Created) })
	writeJSON(w, http.StatusOK, map[string]any{"jobs": out, "workers": s.back.Workers()})
}

// QueueJob is a waiting or running job as GET /v1/queue shows it to any
// client: who it belongs to, where it is and what size of job it is. The
// prompt and the rest of the request are shown only to the job's own
// client (a token's owner sees its sub-clients' too).
type QueueJob struct {
	ID     string `json:"id"`
	Client string `json:"client"`
	// Mine is true for the caller's own jobs (and its sub-clients').
	Mine  bool   `json:"mine"`
	State string `json:"state"` // queued or running
	// Position counts the waiting jobs before this one (0: next); it is
	// 0 for running jobs.
	Position int    `json:"position"`
	Worker   string `json:"worker,omitempty"`
	Phase    string `json:"phase,omitempty"`
	Step     int    `json:"step,omitempty"`
	Total    int    `json:"total,omitempty"`
	Model    string `json:"model"`
	// Width, Height and Steps are 0 where the client left them to the
	// model's defaults (known once a worker loads the model; Total then
	// gives the steps).
	Width  int `json:"width"`
	Height int `json:"height"`
	Steps  int `json:"steps"`
	// Request is the whole request, for the caller's own jobs only.
	Request *engine.Request `json:"request,omitempty"`
	Created time.Time       `json:"created"`
	// Here marks, in Client.Queue's answer, a job that this Client's
	// Generate submitted and follows; the server does not send it.
	Here bool `json:"-"`
}

// getQueue answers GET /v1/queue: every running job (oldest first), then
// every waiting job in the order the workers get them.
func (s *Server) getQueue(w http.ResponseWriter, r *http.Request, c caller) {
	type entry struct {
		v       QueueJob
		started time.Time
		rank    int // 0 running, 1 handed to JetStream, 2 in the fair queue
		pos     int
	}
	var es []entry
	s.mu.Lock()
	for _, j := range s.jobs {
		if j.state != StateQueued && j.state != StateRunning {
			continue
		}
		req := j.Task.Request
		mine := j.Client == c.name || strings.HasPrefix(j.Client, c.name+"/")
		model := req.Model
		if model == "" {
			model = engine.DefaultModel
		}
		e := entry{v: QueueJob{ID: j.ID, Client: j.Client, Mine: mine, State: j.state, Worker: j.worker, Phase: j.phase,
			Step: j.step, Total: j.total, Model: model, Created: j.created}, started: j.started}
		given := func(f string, v int) int {
			if slices.Contains(j.Task.Given, f) {
				return v
			}
			return 0
		}
		e.v.Width, e.v.Height, e.v.Steps = given("width", req.Width), given("height", req.Height), given("steps", req.Steps)
		if mine {
			e.v.Request = &req
		}
		if j.state == StateQueued {
			// A job handed to the JetStream queue has left the fair
			// queue (position -1): it is next, as far as this server
			// knows.
			e.rank, e.pos = 2, s.queue.position(j)
			if e.pos < 0 {
				e.rank = 1
			}
		}
		es = append(es, e)
	}
	s.mu.Unlock()
	slices.SortFunc(es, func(a, b entry) int {
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		if a.rank == 0 {
			return a.started.Compare(b.started)
		}
		if a.pos != b.pos {
			return a.pos - b.pos
		}
		return a.v.Created.Compare(b.v.Created)
	})
	out := make([]QueueJob, 0, len(es))
	waiting := 0
	for _, e := range es {
		if e.v.State == StateQueued {
			e.v.Position = waiting
			waiting++
		}
		out = append(out, e.v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": out, "queued": waiting})
}
