package tui

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/script/dr"
	"github.com/darkroom-ai/darkroom/server"
)

// gatedBackend holds a backend's workers back until gate closes, so that
// jobs stay queued on the server while the test looks.
type gatedBackend struct {
	server.Backend
	gate chan struct{}
}

func (g gatedBackend) Serve(ctx context.Context, s *server.Server) error {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Backend.Serve(ctx, s)
}

// serverJobs reads a server's queue for the queue pane, as cmd does for
// `darkroom --server`.
type serverJobs struct{ c *server.Client }

func (q serverJobs) RemoteJobs() ([]RemoteJob, error) {
	jobs, err := q.c.Queue(context.Background())
	if err != nil {
		return nil, err
	}
	var out []RemoteJob
	for _, j := range jobs {
		r := RemoteJob{ID: j.ID, Client: j.Client, Mine: j.Mine, Here: j.Here, State: JobQueued, Position: j.Position, Worker: j.Worker,
			Phase: j.Phase, Step: j.Step, Total: j.Total, Model: j.Model, Width: j.Width, Height: j.Height, Steps: j.Steps}
		if j.State == server.StateRunning {
			r.State = JobRunning
		}
		if j.Request != nil {
			r.Prompt = j.Request.Prompt
		}
		out = append(out, r)
	}
	return out, nil
}

// TestServerQueuePane attaches the TUI to a real server (the built-in
// model on a CPU worker): another client's waiting job shows in the queue
// pane, marked @bob and without its prompt; the TUI's own job, run on the
// server, is not listed twice, says it waits there, gets the server's
// live previews and ends done; then the server's queue is empty again.
func TestServerQueuePane(t *testing.T) {
	eng, err := engine.Open(engine.Options{Device: "cpu", ModelDirs: []string{t.TempDir()}, NamesOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	gate := make(chan struct{})
	back := gatedBackend{server.NewLocal(&server.Runner{Engine: eng, Name: "cpu-0", Scratch: t.TempDir(), PreviewEvery: time.Millisecond}), gate}
	srv, err := server.New(server.Options{Tokens: []server.Token{{Name: "tui", Secret: "tui-secret"}, {Name: "bob", Secret: "bob-secret"}}}, back)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer srv.Close()
	defer hs.Close()

	bobReq := engine.DefaultRequest()
	bobReq.Model, bobReq.Prompt, bobReq.Seed, bobReq.Steps, bobReq.Width, bobReq.Height = engine.DefaultModel, "bob's secret digit", 9, 6, 40, 48
	bobID, err := server.NewClient(hs.URL, "bob-secret").Submit(context.Background(), bobReq)
	if err != nil {
		t.Fatal(err)
	}

	c := server.NewClient(hs.URL, "tui-secret")
	connect := func(url, token string) (dr.Remote, error) { return server.NewClient(url, token), nil }
	h := newHarness(t, tinyModels(), harnessOpts{w: 100, h: 30, pipeline: c, remote: serverJobs{c}, model: engine.DefaultModel, connect: connect})
	h.waitFor("bob's job in the queue pane", func(a *App) bool { return strings.Contains(h.screen(), "@bob") })
	if len(h.app.remote) != 1 || h.app.remote[0].ID != bobID || h.app.remote[0].Mine || h.app.remote[0].Prompt != "" {
		t.Fatalf("the server's queue: %+v", h.app.remote)
	}
	scr := h.screen()
	for _, want := range []string{"server queue: 1 other job", "@bob", "queued", "40×48 6 steps darkroom-digits"} {
		if !strings.Contains(scr, want) {
			t.Errorf("the queue pane lacks %q:\n%s", want, scr)
		}
	}
	if strings.Contains(scr, "secret") {
		t.Errorf("the queue pane shows bob's prompt:\n%s", scr)
	}

	// The TUI's own job waits on the server behind bob's; it is listed
	// once, in the TUI's own rows, saying so.
	h.fill("a handwritten digit 7")
	h.setField(fieldSize, "32x32")
	h.keys("ctrl+g")
	h.waitFor("the TUI's job on the server", func(a *App) bool {
		q, err := c.Queue(context.Background())
		return err == nil && len(q) == 2
	})
	time.Sleep(remoteInterval + 200*time.Millisecond)
	h.settle()
	if len(h.app.remote) != 1 || h.app.remote[0].ID != bobID {
		t.Errorf("with the TUI's job queued, the pane's server jobs are %+v, want bob's only", h.app.remote)
	}
	if scr := h.screen(); !strings.Contains(scr, "#1  running waiting on the server, 1 ahead") || strings.Count(scr, "server queue: 1 other job") != 1 {
		t.Errorf("the queue pane with the TUI's job waiting on the server:\n%s", scr)
	}

	close(gate)
	sawPreview := false
	// The built-in model loads and runs slowly under the race detector.
	h.waitWithin(2*time.Minute, "the TUI's job done", func(a *App) bool {
		j := a.jobs[0]
		sawPreview = sawPreview || j.Preview != nil
		return j.State == JobDone || j.State == JobFailed
	})
	if j := h.app.jobs[0]; j.State != JobDone || len(j.Images) != 1 {
		t.Fatalf("the TUI's job: %s %s", j.State, j.Err)
	}
	if !sawPreview {
		t.Error("the TUI's job showed no live preview from the server")
	}
	h.waitWithin(time.Minute, "an empty server queue", func(a *App) bool { return strings.Contains(h.screen(), "server queue: no other jobs") })

	// dr.Server on the : line connects a script to the server.
	h.openScript()
	h.eval(`srv, err := dr.Server("` + hs.URL + `", "bob-secret"); check(err); len(srv.ListModels()) > 0`)
	if got := h.lastLine(); got != "true" {
		t.Errorf("dr.Server on the : line: %q", got)
	}
}
