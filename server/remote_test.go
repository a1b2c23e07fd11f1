package server

import (
	"bytes"
	"context"
	"image"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

// TestClientPreviews: Client.Generate hands the server's latent previews
// to its caller as decoded images, each equal to the linear preview the
// engine draws at one of the job's steps, and the job's image still
// equals the engine's.
func TestClientPreviews(t *testing.T) {
	env := newEnv(t, Options{}, 1, false)
	req := engine.DefaultRequest()
	req.Prompt, req.Seed, req.Steps, req.Width, req.Height, req.CFG = "a 4", 21, 30, 32, 32, 5

	// The previews of every step, as the engine draws them locally.
	directOnce.Do(func() { directEngine, directErr = engine.Open(engine.Options{Device: "cpu"}) })
	if directErr != nil {
		t.Fatal(directErr)
	}
	var local []*image.NRGBA
	want, err := directEngine.Generate(context.Background(), req, func(ev engine.Event) {
		if ev.Denoised != nil {
			local = append(local, engine.LatentPreview(ev.Format, ev.Denoised, ev.LatentShape, 0))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(local) != req.Steps {
		t.Fatalf("%d local previews for %d steps", len(local), req.Steps)
	}

	var got []*image.NRGBA
	var stepsOf []int
	res, err := NewClient(env.http.URL, "").Generate(context.Background(), req, func(ev engine.Event) {
		if ev.Preview != nil {
			got = append(got, ev.Preview)
			stepsOf = append(stepsOf, ev.Step)
		}
		if ev.Denoised != nil {
			t.Error("a remote event carries latents")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	samePixels(t, "client job", res.Images[0], want.Images[0])
	if len(got) == 0 {
		t.Fatal("no preview reached the client")
	}
	t.Logf("%d previews at steps %v", len(got), stepsOf)
	for i, p := range got {
		if p.Bounds() != local[0].Bounds() {
			t.Fatalf("preview %d: size %v, want the latent's %v", i, p.Bounds(), local[0].Bounds())
		}
		if !slices.ContainsFunc(local, func(l *image.NRGBA) bool { return bytes.Equal(l.Pix, p.Pix) }) {
			t.Errorf("preview %d (step %d) is none of the engine's step previews", i, stepsOf[i])
		}
	}
}

// TestQueueRoute: GET /v1/queue shows every client the running and
// waiting jobs in queue order, with their sizes, but the prompt and
// request only to the job's own client; without a token it answers 401.
// Client.Queue reads it and marks the jobs its Generate follows.
func TestQueueRoute(t *testing.T) {
	env := newEnv(t, Options{Tokens: []Token{{Name: "alice", Secret: "alice-secret"}, {Name: "bob", Secret: "bob-secret"}}}, 1, true)
	env.want(401, call{method: "GET", path: "/v1/queue"}, nil)
	env.want(401, call{method: "GET", path: "/v1/queue", token: "wrong-secret"}, nil)

	var a1, b1, a2 jobView
	env.want(202, call{method: "POST", path: "/v1/jobs", token: "alice-secret", body: `{"prompt": "alice's secret digit 1", "steps": 4, "width": 32, "height": 32}`}, &a1)
	env.want(202, call{method: "POST", path: "/v1/jobs", token: "alice-secret", body: `{"prompt": "alice's secret digit 2", "steps": 5, "width": 32, "height": 32}`}, &a2)
	env.want(202, call{method: "POST", path: "/v1/jobs", token: "bob-secret", client: "bot", body: `{"prompt": "bob's secret digit 3", "steps": 6, "width": 40, "height": 48, "model": "digits2"}`}, &b1)

	alice := NewClient(env.http.URL, "alice-secret")
	q, err := alice.Queue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The fair order: alice's first, bob's, then alice's second.
	var ids []string
	for _, j := range q {
		ids = append(ids, j.ID)
	}
	if !slices.Equal(ids, []string{a1.ID, b1.ID, a2.ID}) {
		t.Fatalf("queue %v, want %v", ids, []string{a1.ID, b1.ID, a2.ID})
	}
	for i, j := range q {
		if j.State != StateQueued || j.Position != i || j.Here {
			t.Errorf("job %d: %+v", i, j)
		}
	}
	if j := q[0]; !j.Mine || j.Client != "alice" || j.Request == nil || j.Request.Prompt != "alice's secret digit 1" || j.Steps != 4 || j.Model != engine.DefaultModel {
		t.Errorf("alice's own job: %+v", j)
	}
	if j := q[1]; j.Mine || j.Client != "bob/bot" || j.Request != nil || j.Width != 40 || j.Height != 48 || j.Steps != 6 || j.Model != "digits2" {
		t.Errorf("bob's job, seen by alice: %+v", j)
	}
	raw := string(env.want(200, call{method: "GET", path: "/v1/queue", token: "alice-secret"}, nil))
	if strings.Contains(raw, "bob's secret") || !strings.Contains(raw, "alice's secret digit 2") {
		t.Errorf("alice's view of the queue: %s", raw)
	}
	raw = string(env.want(200, call{method: "GET", path: "/v1/queue", token: "bob-secret"}, nil))
	if strings.Contains(raw, "alice's secret") || !strings.Contains(raw, "bob's secret digit 3") {
		t.Errorf("bob's view of the queue: %s", raw)
	}

	// A Generate call's own job is marked Here (after alice's second:
	// fourth). Once the worker starts, a job runs on cpu-0 and the others
	// wait, renumbered.
	long := engine.DefaultRequest()
	long.Prompt, long.Seed, long.Steps, long.Width, long.Height = "alice's long digit", 3, 150, 32, 32
	genDone := make(chan error, 1)
	go func() { _, err := alice.Generate(context.Background(), long, nil); genDone <- err }()
	var here QueueJob
	for deadline := time.Now().Add(10 * time.Second); here.ID == ""; {
		if time.Now().After(deadline) {
			t.Fatal("the Generate call's job never showed in the queue")
		}
		q, err = alice.Queue(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range q {
			if j.Here {
				here = j
			}
		}
	}
	if here.Request == nil || here.Request.Prompt != long.Prompt || here.Position != 3 {
		t.Errorf("the Generate call's job: %+v", here)
	}
	env.start()
	for deadline := time.Now().Add(10 * time.Second); ; {
		q, err = alice.Queue(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(q) > 0 && q[0].State == StateRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no job runs: %+v", q)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if q[0].Worker != "cpu-0" || q[0].Position != 0 {
		t.Errorf("running job: %+v", q[0])
	}
	for i, j := range q[1:] {
		if j.State != StateQueued || j.Position != i {
			t.Errorf("waiting job %d: %+v", i, j)
		}
	}
	if err := <-genDone; err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if q, err = alice.Queue(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(q) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the queue after every job: %+v", q)
		}
	}
}
