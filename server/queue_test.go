package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

func qjob(client, model string) *job {
	return &job{ID: client + "-" + model, Client: client, Task: Task{}}
}

// TestFairQueuePrefer: a worker with a model loaded gets the first job of
// that model in round-robin order; without one, the order is kept; a
// removed job leaves no gap; pop waits for a push and ends with its
// context.
func TestFairQueuePrefer(t *testing.T) {
	q := newFairQueue(10)
	a1, a2, b1, c1 := qjob("a", "m1"), qjob("a", "m2"), qjob("b", "m1"), qjob("c", "m2")
	a1.Task.Request.Model, a2.Task.Request.Model, b1.Task.Request.Model, c1.Task.Request.Model = "m1", "m2", "m1", "m2"
	for _, j := range []*job{a1, a2, b1, c1} {
		if err := q.push(j); err != nil {
			t.Fatal(err)
		}
	}
	if p := q.position(c1); p != 2 {
		t.Errorf("position of c's first job %d, want 2", p)
	}
	if p := q.position(a2); p != 3 {
		t.Errorf("position of a's second job %d, want 3", p)
	}
	wants := func(m string) func(*job) bool { return func(j *job) bool { return j.Task.Request.Model == m } }
	ctx := context.Background()
	// The heads are a1 (m1), b1 (m1), c1 (m2): a worker holding m2 gets
	// c1, the first m2 head in the round.
	if j, _ := q.pop(ctx, wants("m2")); j != c1 {
		t.Fatalf("m2 worker got %s, want %s", j.ID, c1.ID)
	}
	var order []string
	for q.len() > 0 {
		j, _ := q.pop(ctx, nil)
		order = append(order, j.ID)
	}
	if got := strings.Join(order, " "); got != "a-m1 b-m1 a-m2" {
		t.Errorf("order %s", got)
	}
	if q.remove(a1) {
		t.Error("removed a job that is not waiting")
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		q.push(a1)
	}()
	if j, err := q.pop(ctx, nil); err != nil || j != a1 {
		t.Fatalf("pop after a push: %v %v", j, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := q.pop(cctx, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("pop on an empty queue: %v", err)
	}
}

// TestRunnerIgnoresPaths: a task naming an init image by path (a task put
// on the queue by hand) reads no file: the request is img2img without an
// image, refused; without the denoise it runs as text-to-image.
func TestRunnerIgnoresPaths(t *testing.T) {
	r := &Runner{Engine: sharedEngine(t), Name: "t"}
	task := Task{ID: "x", Request: engineRequest(t), Given: []string{"width", "height", "steps", "cfg", "sampler", "scheduler"}}
	task.Request.InitImage, task.Request.Denoise = "/etc/passwd", 0.5
	o := r.Run(context.Background(), task, nil)
	if !strings.Contains(o.Error, "needs an init image") || o.Field != "denoise" || o.Request.InitImage != "" {
		t.Fatalf("outcome: %q (field %q), init image %q", o.Error, o.Field, o.Request.InitImage)
	}
	task.Request.Denoise = 0
	if o = r.Run(context.Background(), task, nil); o.Error != "" || len(o.Images) != 1 {
		t.Fatalf("outcome: %q, %d images", o.Error, len(o.Images))
	}
}

// engineRequest is a small request for the built-in model.
func engineRequest(t *testing.T) engine.Request {
	t.Helper()
	req := engine.DefaultRequest()
	req.Prompt, req.Seed, req.Steps, req.Width, req.Height = "a 4", 4, 2, 32, 32
	return req
}
