package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/darkroom-ai/darkroom/engine"
)

// workerEnv makes the test binary a JetStream worker process (see
// TestMain): its value is the NATS URL, workerName the worker's name.
const (
	workerEnv  = "DARKROOM_SERVER_TEST_WORKER"
	workerName = "DARKROOM_SERVER_TEST_WORKER_NAME"
)

func TestMain(m *testing.M) {
	if url := os.Getenv(workerEnv); url != "" {
		os.Exit(testWorker(url, os.Getenv(workerName)))
	}
	os.Exit(m.Run())
}

// testWorker is a worker process: a CPU runner on the shared queue. It
// prints "stored ID" for every outcome it stores, for the test to count.
func testWorker(url, name string) int {
	nc, err := nats.Connect(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	e, err := engine.Open(engine.Options{Device: "cpu", NamesOnly: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r := &Runner{Engine: e, Name: name}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() { // the test closes stdin to stop the worker
		io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	err = RunWorker(ctx, nc, r, JetStreamOptions{AckWait: time.Second, stored: func(id string) { fmt.Printf("stored %s\n", id) }})
	if err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// workerProc is a worker process of the test.
type workerProc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
}

func startWorker(t *testing.T, url, name string, stored chan<- string) *workerProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), workerEnv+"="+url, workerName+"="+name)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &workerProc{name: name, cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "stored "); ok {
				stored <- id
			}
		}
		cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-w.done
		}
	})
	return w
}

// TestJetStreamKill: a server on an embedded nats-server, 3 worker
// processes, 50 jobs (20 under -race); one worker is killed with SIGKILL in the middle of
// a job. Every job ends done, and every outcome is stored exactly once
// (counted from the workers' own reports): the killed job is redelivered
// to another worker, nothing runs twice to completion.
func TestJetStreamKill(t *testing.T) {
	ns, nc := embeddedNATS(t)
	ctx := context.Background()
	back, err := NewJetStream(ctx, nc, JetStreamOptions{AckWait: time.Second, Window: 50})
	if err != nil {
		t.Fatal(err)
	}
	env := newEnvBackend(t, Options{QueueSize: 100}, back)

	stored := make(chan string, 200)
	var workers []*workerProc
	for i := range 3 {
		workers = append(workers, startWorker(t, ns.ClientURL(), fmt.Sprintf("proc-%d", i), stored))
	}
	t0 := time.Now()
	jobs := 50
	if raceDetector {
		jobs = 20 // race-instrumented worker processes are slow
	}
	var ids []string
	for i := range jobs {
		var v jobView
		env.want(202, call{method: "POST", path: "/v1/jobs", client: fmt.Sprintf("c%d", i%5),
			body: fmt.Sprintf(`{"prompt": "a %d", "seed": %d, "steps": %d, "width": 16, "height": 16}`, i%10, i, 2+i%2)}, &v)
		ids = append(ids, v.ID)
	}
	owner := func(i int) string { return fmt.Sprintf("c%d", i%5) }
	// Kill proc-1 once it is in the middle of a job.
	victim := workers[1]
	var killed string
	deadline := time.Now().Add(60 * time.Second)
	for killed == "" {
		// The server's own view, read often: the jobs are short.
		env.srv.mu.Lock()
		for _, id := range ids {
			j := env.srv.jobs[id]
			if j.state == StateRunning && j.worker == victim.name && j.step > 0 && j.step < j.total {
				victim.cmd.Process.Signal(syscall.SIGKILL)
				killed = id
				break
			}
		}
		env.srv.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("proc-1 was never seen in the middle of a job")
		}
		time.Sleep(time.Millisecond)
	}
	<-victim.done
	tKill := time.Since(t0)
	// Every job ends done.
	for i, id := range ids {
		v := env.wait(id, "", owner(i))
		if v.State != StateDone || len(v.Images) != 1 {
			t.Fatalf("job %d (%s): %s %q", i, id, v.State, v.Error)
		}
		if id == killed && v.Worker == victim.name {
			t.Errorf("the killed job %s reports the killed worker", id)
		}
	}
	tDone := time.Since(t0)
	// Count the outcomes stored: each job exactly once.
	count := map[string]int{}
	timeout := time.After(5 * time.Second)
collect:
	for len(count) < jobs {
		select {
		case id := <-stored:
			count[id]++
		case <-timeout:
			break collect
		}
	}
	// Late duplicates would arrive now.
	for drained := false; !drained; {
		select {
		case id := <-stored:
			count[id]++
		case <-time.After(500 * time.Millisecond):
			drained = true
		}
	}
	// Stop the workers together (each takes up to a fetch wait).
	for _, w := range workers {
		w.stdin.Close()
	}
	for _, w := range workers {
		<-w.done
	}
	for _, id := range ids {
		if count[id] != 1 {
			t.Errorf("job %s stored %d times, want 1", id, count[id])
		}
	}
	t.Logf("%d jobs on 3 worker processes, %s killed mid-job (job %s) after %v: all done after %v, each stored once", jobs, victim.name, killed, tKill, tDone)
}

// newEnvBackend is newEnv with a given backend.
func newEnvBackend(t *testing.T, opts Options, back Backend) *testEnv {
	t.Helper()
	env := &testEnv{t: t, dir: sharedModelDir(t)}
	opts.ModelDirs = []string{env.dir}
	s, err := New(opts, back)
	if err != nil {
		t.Fatal(err)
	}
	env.srv = s
	env.http = httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		env.http.Close()
		s.Close()
	})
	return env
}

// TestJetStreamRestart: jobs queued while no worker runs survive a
// restart of the server and of its embedded nats-server (same store
// folder), both those handed to the work queue and those still waiting
// in the server's fair queue (the window is 2 of 5); a worker that joins
// afterwards runs them all, each once, in the order they came, and the
// new server answers for them.
func TestJetStreamRestart(t *testing.T) {
	store := t.TempDir()
	ctx := context.Background()
	ns, err := StartEmbedded(EmbeddedOptions{StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	back, err := NewJetStream(ctx, nc, JetStreamOptions{Window: 2})
	if err != nil {
		t.Fatal(err)
	}
	first := newEnvBackend(t, Options{}, back)
	var ids []string
	for i := range 5 {
		var v jobView
		first.want(202, call{method: "POST", path: "/v1/jobs", client: "alice", body: fmt.Sprintf(`{"prompt": "a %d", "seed": %d, "steps": 3}`, i, i)}, &v)
		ids = append(ids, v.ID)
	}
	js, _ := jetstream.New(nc)
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, err := js.Stream(ctx, jobStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs in the stream, want 2 (the window)", info.State.Msgs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A job cancelled while it waits is not taken back.
	var gone jobView
	first.want(202, call{method: "POST", path: "/v1/jobs", client: "alice", body: `{"prompt": "a 9", "steps": 3}`}, &gone)
	first.want(200, call{method: "DELETE", path: "/v1/jobs/" + gone.ID, client: "alice"}, nil)
	first.http.Close()
	first.srv.Close()
	nc.Close()
	ns.Shutdown()
	ns.WaitForShutdown()

	ns, err = StartEmbedded(EmbeddedOptions{StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err = nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	back, err = NewJetStream(ctx, nc, JetStreamOptions{Window: 2})
	if err != nil {
		t.Fatal(err)
	}
	second := newEnvBackend(t, Options{}, back)
	// Before any worker runs, the new server knows every job: queued,
	// in the order they came.
	for i, id := range ids {
		var v jobView
		second.want(200, call{method: "GET", path: "/v1/jobs/" + id, client: "alice"}, &v)
		if v.State != StateQueued || v.Client != "local/alice" || v.Request.Prompt != fmt.Sprintf("a %d", i) {
			t.Fatalf("job %d after the restart: %s of %q, prompt %q", i, v.State, v.Client, v.Request.Prompt)
		}
	}
	if status, b := second.do(call{method: "GET", path: "/v1/jobs/" + gone.ID, client: "alice"}); status != 404 {
		t.Errorf("the job cancelled before the restart: %d %s, want 404", status, b)
	}
	var order []string
	var mu sync.Mutex
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- RunWorker(wctx, nc, &Runner{Engine: sharedEngine(t), Name: "late"}, JetStreamOptions{stored: func(id string) {
			mu.Lock()
			order = append(order, id)
			mu.Unlock()
		}})
	}()
	defer func() { stop(); <-done }()
	for _, id := range ids {
		// The job keeps its client, which ownership checks use.
		if v := second.wait(id, "", "alice"); v.State != StateDone || len(v.Images) != 1 || v.Worker != "late" || v.Client != "local/alice" {
			t.Fatalf("job %s after the restart: %s %q on %q", id, v.State, v.Error, v.Worker)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, ids) {
		t.Errorf("the jobs ran in the order %v, want %v (each once, as they came)", order, ids)
	}
	js, _ = jetstream.New(nc)
	st, err := js.Stream(ctx, pendingStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Errorf("the pending stream still holds jobs (%+v, %v), want none", info, err)
	}
}

// TestJetStreamPrefersLoaded: a JetStream worker takes the jobs of a
// model it has loaded before older jobs of another model, and the rest in
// the order they came. Six jobs alternate the built-in model and digits2;
// the worker has digits2 loaded, so it runs digits2's three, then the
// built-in model's three.
func TestJetStreamPrefersLoaded(t *testing.T) {
	_, nc := embeddedNATS(t)
	ctx := context.Background()
	back, err := NewJetStream(ctx, nc, JetStreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	env := newEnvBackend(t, Options{}, back)
	var ids, builtin, digits2 []string
	for i := range 6 {
		model := ""
		if i%2 == 1 {
			model = "digits2"
		}
		var v jobView
		env.want(202, call{method: "POST", path: "/v1/jobs", body: fmt.Sprintf(`{"prompt": "a %d", "seed": %d, "steps": 2, "width": 32, "height": 32, "model": %q}`, i, i, model)}, &v)
		ids = append(ids, v.ID)
		if model == "" {
			builtin = append(builtin, v.ID)
		} else {
			digits2 = append(digits2, v.ID)
		}
	}
	js, _ := jetstream.New(nc)
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, _ := js.Stream(ctx, jobStream)
		if info, err := st.Info(ctx); err == nil && info.State.Msgs == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the 6 jobs did not reach the work queue")
		}
		time.Sleep(10 * time.Millisecond)
	}
	e, err := engine.Open(engine.Options{Device: "cpu", ModelDirs: []string{env.dir}, NamesOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	warm := engine.DefaultRequest()
	warm.Model, warm.Steps, warm.Width, warm.Height = "digits2", 1, 32, 32
	if _, err := e.Generate(ctx, warm, nil); err != nil {
		t.Fatal(err)
	}
	if got := e.Loaded(); !slices.Equal(got, []string{"digits2"}) {
		t.Fatalf("loaded %v, want [digits2]", got)
	}
	var order []string
	var mu sync.Mutex
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- RunWorker(wctx, nc, &Runner{Engine: e, Name: "w"}, JetStreamOptions{stored: func(id string) {
			mu.Lock()
			order = append(order, id)
			mu.Unlock()
		}})
	}()
	defer func() { stop(); <-done }()
	for _, id := range ids {
		if v := env.wait(id, "", ""); v.State != StateDone || len(v.Images) != 1 {
			t.Fatalf("job %s: %s %q", id, v.State, v.Error)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := append(slices.Clone(digits2), builtin...); !slices.Equal(order, want) {
		t.Errorf("the worker ran %v, want %v (its loaded model's jobs first, each model's in order)", order, want)
	}
}

// TestJetStreamInProcess is `darkroom serve`'s default set-up: an
// embedded nats-server and a worker in the server's process on the same
// connection. A job runs with progress and previews; a running job is
// cancelled through JetStream; a job cancelled before a worker takes it
// never runs; /v1/devices lists the worker from its heartbeats.
func TestJetStreamInProcess(t *testing.T) {
	_, nc := embeddedNATS(t)
	ctx, stop := context.WithCancel(context.Background())
	back, err := NewJetStream(ctx, nc, JetStreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	env := newEnvBackend(t, Options{}, back)
	done := make(chan error, 1)
	go func() {
		done <- RunWorker(ctx, nc, &Runner{Engine: sharedEngine(t), Name: "here", PreviewEvery: time.Millisecond}, JetStreamOptions{})
	}()
	defer func() { stop(); <-done }()

	var v jobView
	env.want(202, call{method: "POST", path: "/v1/jobs", body: `{"prompt": "a 5", "seed": 5, "steps": 4}`}, &v)
	if v = env.wait(v.ID, "", ""); v.State != StateDone || len(v.Images) != 1 || v.Worker != "here" || v.Step != 4 {
		t.Fatalf("job: %s %q on %q at step %d", v.State, v.Error, v.Worker, v.Step)
	}
	img, _ := decodePNG(t, v.Images[0])
	req := engine.DefaultRequest()
	req.Prompt, req.Seed, req.Steps, req.Width, req.Height, req.CFG = "a 5", 5, 4, 32, 32, 5
	samePixels(t, "JetStream job", img, direct(t, req))

	env.want(202, call{method: "POST", path: "/v1/jobs", body: `{"prompt": "a 6", "steps": 150}`}, &v)
	long := v.ID
	env.want(202, call{method: "POST", path: "/v1/jobs", body: `{"prompt": "a 8", "steps": 150}`}, &v)
	next := v.ID
	for deadline := time.Now().Add(30 * time.Second); ; {
		env.want(200, call{method: "GET", path: "/v1/jobs/" + long + "?images=0"}, &v)
		if v.State == StateRunning && v.Step > 0 && v.Preview != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the long job does not run: %+v", v)
		}
		time.Sleep(2 * time.Millisecond)
	}
	var devs struct{ Workers []WorkerInfo }
	env.want(200, call{method: "GET", path: "/v1/devices"}, &devs)
	if len(devs.Workers) != 1 || devs.Workers[0].Name != "here" || !devs.Workers[0].Remote {
		t.Errorf("workers %+v", devs.Workers)
	}
	// The second job is already on the work queue (the window is 16):
	// its cancel reaches the worker through the cancel mark.
	env.want(200, call{method: "DELETE", path: "/v1/jobs/" + next}, nil)
	env.want(200, call{method: "DELETE", path: "/v1/jobs/" + long}, nil)
	if v = env.wait(long, "", ""); v.State != StateCancelled || v.Step >= 150 {
		t.Errorf("cancelled running job: %s at step %d", v.State, v.Step)
	}
	if v = env.wait(next, "", ""); v.State != StateCancelled || v.Step != 0 {
		t.Errorf("cancelled waiting job: %s at step %d", v.State, v.Step)
	}
	var un struct{ Unloaded int }
	env.want(200, call{method: "POST", path: "/v1/admin/unload"}, &un)
	if un.Unloaded != -1 {
		t.Errorf("unload through JetStream answers %d, want -1 (told, not counted)", un.Unloaded)
	}
}

// TestJetStreamMaxDeliver: a task that no worker ever finishes (each one
// that takes it dies) fails after MaxDeliver deliveries instead of going
// round for ever, and says so.
func TestJetStreamMaxDeliver(t *testing.T) {
	_, nc := embeddedNATS(t)
	ctx := context.Background()
	opts := JetStreamOptions{AckWait: 200 * time.Millisecond, MaxDeliver: 2}
	back, err := NewJetStream(ctx, nc, opts)
	if err != nil {
		t.Fatal(err)
	}
	env := newEnvBackend(t, Options{}, back)
	var v jobView
	env.want(202, call{method: "POST", path: "/v1/jobs", body: `{"prompt": "a 0", "steps": 2}`}, &v)
	// A "worker" that takes the task and dies each time: it never acks.
	js, _ := jetstream.New(nc)
	// The server creates the model's consumer when it hands the task out.
	var cons jetstream.Consumer
	for deadline := time.Now().Add(10 * time.Second); cons == nil; time.Sleep(5 * time.Millisecond) {
		if cons, err = js.Consumer(ctx, jobStream, consumerPrefix+modelToken("")); err != nil && time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	// It keeps asking for work, as workers do: JetStream gives up on a
	// message when it would deliver it once more.
	fctx, stop := context.WithCancel(ctx)
	var deliveries atomic.Int32
	fetched := make(chan struct{})
	go func() {
		defer close(fetched)
		for fctx.Err() == nil {
			batch, err := cons.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
			if err != nil {
				continue
			}
			for range batch.Messages() {
				deliveries.Add(1)
			}
		}
	}()
	v = env.wait(v.ID, "", "")
	stop()
	<-fetched
	if n := deliveries.Load(); n != 2 {
		t.Errorf("the task was delivered %d times, want 2", n)
	}
	if v.State != StateFailed || !strings.Contains(v.Error, "delivered to workers 2 times") {
		t.Fatalf("the job is %s: %q", v.State, v.Error)
	}
}

// embeddedNATS starts a nats-server with JetStream for the test and
// connects to it; both end with the test.
func embeddedNATS(t *testing.T) (*natsserver.Server, *nats.Conn) {
	t.Helper()
	ns, err := StartEmbedded(EmbeddedOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return ns, nc
}
