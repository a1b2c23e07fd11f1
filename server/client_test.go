package server

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

// TestClient drives a server with the Go client, as the TUI does with
// --server: models by name, a job with its steps reported and the image
// equal to the engine's, an img2img job whose init image travels as
// bytes, a field error, and a cancelled context that cancels the job.
func TestClient(t *testing.T) {
	env := newEnv(t, Options{Tokens: []Token{{Name: "tui", Secret: "tui-secret"}}}, 1, false)
	c := NewClient(env.http.URL+"/", "tui-secret")
	var names []string
	for _, m := range c.ListModels() {
		names = append(names, m.Path)
	}
	if !slices.Contains(names, engine.DefaultModel) || !slices.Contains(names, "digits2") {
		t.Fatalf("ListModels: %v", names)
	}
	if NewClient(env.http.URL, "wrong").ListModels() != nil {
		t.Error("ListModels with a wrong token lists models")
	}
	devs, workers, err := c.Devices(context.Background())
	if err != nil || len(devs) == 0 || devs[len(devs)-1].Kind != "cpu" || len(workers) != 1 || workers[0].Name != "cpu-0" {
		t.Fatalf("Devices: %+v %+v %v", devs, workers, err)
	}
	req := engine.DefaultRequest()
	req.Prompt, req.Seed, req.Steps, req.Width, req.Height, req.CFG = "a 1", 11, 5, 32, 32, 5
	var steps []int
	res, err := c.Generate(context.Background(), req, func(ev engine.Event) {
		if ev.Phase == engine.PhaseSample {
			steps = append(steps, ev.Step)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	samePixels(t, "client job", res.Images[0], direct(t, req))
	if len(steps) == 0 || steps[len(steps)-1] != 5 || res.Request.Seed != 11 {
		t.Errorf("steps %v, request %+v", steps, res.Request)
	}

	init := filepath.Join(t.TempDir(), "init.png")
	if err := engine.SavePNG(init, res.Images[0], req, "", ""); err != nil {
		t.Fatal(err)
	}
	ireq := req
	ireq.InitImage, ireq.Denoise = init, 0.5
	res2, err := c.Generate(context.Background(), ireq, nil)
	if err != nil {
		t.Fatal(err)
	}
	samePixels(t, "client img2img", res2.Images[0], direct(t, ireq))

	bad := req
	bad.Width = 1001
	var fe *engine.FieldError
	if _, err := c.Generate(context.Background(), bad, nil); !errors.As(err, &fe) {
		t.Errorf("width 1001: %v, want a FieldError", err)
	}

	long := req
	long.Steps = 150
	ctx, cancel := context.WithCancel(context.Background())
	_, err = c.Generate(ctx, long, func(ev engine.Event) {
		if ev.Step > 0 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Generate: %v", err)
	}
	var list struct{ Jobs []jobView }
	for deadline := time.Now().Add(10 * time.Second); ; {
		env.want(200, call{method: "GET", path: "/v1/jobs", token: "tui-secret"}, &list)
		last := list.Jobs[len(list.Jobs)-1]
		if last.State == StateCancelled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job is %s after its context ended", last.State)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
