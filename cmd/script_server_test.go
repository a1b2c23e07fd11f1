package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/draw"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/server"
)

// startServer runs a darkroom server on loopback with one CPU worker and
// tokens for the clients "repl" and "bob".
func startServer(t *testing.T) string {
	t.Helper()
	eng, err := engine.Open(engine.Options{Device: "cpu", ModelDirs: []string{t.TempDir()}, NamesOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Tokens: []server.Token{{Name: "repl", Secret: "repl-secret"}, {Name: "bob", Secret: "bob-secret"}}},
		server.NewLocal(&server.Runner{Engine: eng, Name: "cpu-0", Scratch: t.TempDir()}))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
		eng.Close()
	})
	return hs.URL
}

// serverJobs lists the jobs of the client "repl" on the server.
func serverJobs(t *testing.T, url string) []struct{ State, Client string } {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/v1/jobs", nil)
	req.Header.Set("Authorization", "Bearer repl-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Jobs []struct{ State, Client string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	return list.Jobs
}

// readImage decodes a PNG file as NRGBA.
func readImage(t *testing.T, path string) *image.NRGBA {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	n := image.NewNRGBA(img.Bounds())
	draw.Draw(n, n.Bounds(), img, img.Bounds().Min, draw.Src)
	return n
}

// localImage runs req on this machine's engine, as `darkroom gen` does.
func localImage(t *testing.T, req engine.Request) *image.NRGBA {
	t.Helper()
	eng, err := engine.Open(engine.Options{Device: "cpu", ModelDirs: []string{t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	res, err := eng.Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Images[0]
}

func samePixels(t *testing.T, what string, got, want *image.NRGBA) {
	t.Helper()
	if got.Bounds() != want.Bounds() || !bytes.Equal(got.Pix, want.Pix) {
		t.Errorf("%s: the server's image (%v) differs from the local engine's (%v)", what, got.Bounds(), want.Bounds())
	}
}

// serverCells generate on the session's server (generate) and through
// dr.Server, saving both images; %URL and %DIR are replaced.
const serverCells = `req := engine.DefaultRequest()
req.Model, req.Prompt, req.Seed, req.Steps, req.Width, req.Height, req.CFG = "darkroom-digits", "a handwritten digit 7", 42, 12, 32, 32, 5
previews := 0
res, err := generate(ctx, req, func(ev engine.Event) {
	if ev.Preview != nil {
		previews++
	}
})
check(err)
check(grid.Save("%DIR/generate.png", res.Images[0]))
fmt.Println("previews seen:", previews > 0)
srv, err := dr.Server("%URL", "repl-secret")
check(err)
res2, err := srv.Generate(ctx, req, nil)
check(err)
check(grid.Save("%DIR/server.png", res2.Images[0]))
fmt.Println("models:", len(srv.ListModels()) > 0)
`

func serverRequest() engine.Request {
	req := engine.DefaultRequest()
	req.Model, req.Prompt, req.Seed, req.Steps, req.Width, req.Height, req.CFG = engine.DefaultModel, "a handwritten digit 7", 42, 12, 32, 32, 5
	return req
}

// TestREPLServer: `darkroom repl --server URL` runs generate on the
// server (its job is the server's, it streams previews) and its image
// equals the local engine's for the same request; dr.Server connects a
// cell explicitly, with the same image.
func TestREPLServer(t *testing.T) {
	url := startServer(t)
	dir := t.TempDir()
	cells := strings.NewReplacer("%URL", url, "%DIR", dir).Replace(serverCells)
	root := NewRootCmd()
	var out, errb bytes.Buffer
	root.SetArgs([]string{"repl", "--server", url, "--server-token", "repl-secret", "--history", "-", "--graphics", "none", "--device", "cpu"})
	root.SetIn(strings.NewReader(cells))
	root.SetOut(&out)
	root.SetErr(&errb)
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(errb.String(), "error") || !strings.Contains(out.String(), "previews seen: true") || !strings.Contains(out.String(), "models: true") {
		t.Fatalf("stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "generate and dr.Generate run on the server "+url) {
		t.Errorf("stderr does not say where the jobs run: %s", errb.String())
	}
	jobs := serverJobs(t, url)
	if len(jobs) != 2 || jobs[0].State != "done" || jobs[1].State != "done" {
		t.Errorf("the server's jobs of client repl: %+v, want 2 done", jobs)
	}
	want := localImage(t, serverRequest())
	samePixels(t, "generate", readImage(t, filepath.Join(dir, "generate.png")), want)
	samePixels(t, "dr.Server", readImage(t, filepath.Join(dir, "server.png")), want)
}

// TestRunServer: `darkroom run --server URL cells.go` runs the same cells
// with the same images; bad --server use is one line naming the flag.
func TestRunServer(t *testing.T) {
	url := startServer(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "cells.go")
	if err := os.WriteFile(p, []byte(strings.NewReplacer("%URL", url, "%DIR", dir).Replace(serverCells)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := run(t, "run", "--server", url, "--server-token=repl-secret", p)
	if code != 0 || !strings.Contains(out, "previews seen: true") {
		t.Fatalf("run: code %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if jobs := serverJobs(t, url); len(jobs) != 2 {
		t.Errorf("the server's jobs: %+v, want 2", jobs)
	}
	want := localImage(t, serverRequest())
	samePixels(t, "generate", readImage(t, filepath.Join(dir, "generate.png")), want)
	samePixels(t, "dr.Server", readImage(t, filepath.Join(dir, "server.png")), want)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--server"}, "--server needs a value"},
		{[]string{"run", "--server", url}, "darkroom run needs a recipe file (a .go file) after its flags"},
		{[]string{"run", "--server-token", "repl-secret", p}, "--server-token: give --server URL too"},
		{[]string{"run", "--server", url, "--server-token", "wrong-secret", p}, "--server " + url + ": no answer from GET /v1/models"},
		{[]string{"repl", "--server", url, "--server-token", "wrong-secret"}, "--server " + url + ": no answer from GET /v1/models"},
	} {
		_, stderr, code := run(t, tc.args...)
		if code != 1 || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
			t.Errorf("darkroom %s: exit %d, stderr %q, want %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
	}
}

// TestServerQueueSource: the TUI's queue source (serverQueue) lists
// another client's job without its prompt, and marks Here the job the
// TUI's own client runs there.
func TestServerQueueSource(t *testing.T) {
	url := startServer(t)
	long := serverRequest()
	long.Steps, long.Prompt = 150, "bob's private digit"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bobDone := make(chan error, 1)
	go func() { _, err := server.NewClient(url, "bob-secret").Generate(ctx, long, nil); bobDone <- err }()
	c := server.NewClient(url, "repl-secret")
	own := long
	own.Prompt = "the TUI's digit"
	ownDone := make(chan error, 1)
	go func() { _, err := c.Generate(ctx, own, nil); ownDone <- err }()
	hereID, sawBob := "", false
	for deadline := time.Now().Add(30 * time.Second); hereID == "" || !sawBob; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("did not see both jobs: here %q, bob's %v", hereID, sawBob)
		}
		q, err := c.Queue(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range q {
			if j.Here {
				hereID = j.ID
			}
		}
		jobs, err := serverQueue{c}.RemoteJobs()
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			switch {
			case j.ID == hereID || j.Mine:
				if !j.Here || !j.Mine || j.Prompt != own.Prompt {
					t.Fatalf("the TUI's own job: %+v", j)
				}
			case j.Client == "bob":
				sawBob = true
				if j.Prompt != "" || j.Steps != 150 || j.Model != engine.DefaultModel {
					t.Errorf("bob's job: %+v", j)
				}
			}
		}
	}
	cancel() // both jobs stop between steps
	for _, ch := range []chan error{bobDone, ownDone} {
		if err := <-ch; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
}
