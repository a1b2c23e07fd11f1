package tui

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

func TestHostSampler(t *testing.T) {
	h := &hostSampler{root: "testdata/proc"}
	st, err := h.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if st.CPU != 0 || st.Cores != 2 || st.MemTotal != 8<<30 || st.MemUsed != 2<<30 {
		t.Errorf("first sample %+v, want 0%% of 2 cores, 2 GiB of 8 used", st)
	}
	h.root = "testdata/proc2" // +600 user +400 system +800 idle +200 iowait
	st, err = h.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if st.CPU != 50 {
		t.Errorf("CPU %.2f%%, want 50%%", st.CPU)
	}
	h.root = "testdata/missing"
	if _, err := h.Sample(); err == nil {
		t.Error("no error for a missing /proc")
	}
}

func TestDevicesRows(t *testing.T) {
	c := &Common{Styles: DefaultStyles(true), Keys: DefaultKeyMap()}
	d := NewDevicesPane(c)
	if got := stripANSI(strings.Join(d.Rows(34), "\n")); got != "sampling…" {
		t.Errorf("before a sample: %q", got)
	}
	gpus, _ := fakeGPU{}.GPUStats()
	d.Set(devicesMsg{Host: HostStat{CPU: 25, Cores: 2, MemUsed: 1 << 30, MemTotal: 4 << 30}, GPUs: gpus})
	rows := d.Rows(50)
	if len(rows) != 4 || d.Height() != 4 {
		t.Fatalf("%d rows (height %d), want 4", len(rows), d.Height())
	}
	want := []string{"GPU0 NVIDIA GeForce RTX 4090  97% 71°C 402W", "VRAM ", "20.0G/24.0G", "CPU  ", " 25% 2c", "RAM  ", "1.0G/4.0G"}
	all := stripANSI(strings.Join(rows, "\n"))
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("rows lack %q:\n%s", w, all)
		}
	}
	// VRAM 20/24 of a 33-cell bar → 27.5 cells: 27 full and a half.
	vram := stripANSI(rows[1])
	if n := strings.Count(vram, "█"); n != 27 || !strings.Contains(vram, "▌") {
		t.Errorf("VRAM gauge has %d full cells, want 27 and ▌: %q", n, vram)
	}
	d.Set(devicesMsg{HostErr: errors.New("no /proc"), GPUErr: errors.New("nvml: driver not loaded")})
	all = stripANSI(strings.Join(d.Rows(40), "\n"))
	if !strings.Contains(all, "GPU: nvml: driver not loaded") || !strings.Contains(all, "host: no /proc") {
		t.Errorf("errors not shown: %q", all)
	}
}

func TestQueueRows(t *testing.T) {
	c := &Common{Styles: DefaultStyles(true), Keys: DefaultKeyMap()}
	q := NewQueuePane(c)
	req := engine.DefaultRequest()
	jobs := []*Job{
		{ID: 1, Req: req, State: JobDone, Step: 20, Total: 20, Rate: 123.4, Elapsed: 1500 * time.Millisecond},
		{ID: 2, Req: req, State: JobRunning, Phase: engine.PhaseSample, Step: 5, Total: 20, Rate: 2.5, ETA: 6 * time.Second},
		{ID: 3, Req: req, State: JobFailed, Err: "load model: no such file"},
		{ID: 4, Req: req, State: JobCancelled, Step: 3, Total: 20},
		{ID: 5, Req: req, State: JobQueued},
		{ID: 6, Req: req, State: JobRunning, Phase: engine.PhaseEncode, Cancelling: true},
	}
	withOptions := req
	withOptions.Hires, withOptions.InitImage = 2, "my photo.png"
	jobs = append(jobs, &Job{ID: 7, Req: withOptions, State: JobQueued})
	rows := q.Rows(jobs, 42, 10, false)
	if got, want := strings.TrimRight(stripANSI(q.Rows(jobs, 80, 10, false)[6]), " "), `#7  queued  512×512 euler 20 steps init-image="my photo.png" hires=2`; got != want {
		t.Errorf("queued row with options = %q, want %q", got, want)
	}
	want := []string{
		"#1  done    ██████ 20/20  123it/s     1.5s",
		"#2  running █▌░░░░  5/20  2.5it/s ETA 6.0s",
		"#3  failed  load model: no such file",
		"#4  cancelled at step 3/20",
		"#5  queued  512×512 euler 20 steps",
		"#6  stopping ░░░░ encode",
		"#7  queued  512×512 euler 20 steps init-i…",
	}
	for i, w := range want {
		if got := strings.TrimRight(stripANSI(rows[i]), " "); got != w {
			t.Errorf("row %d = %q, want %q", i, got, w)
		}
	}
	for i, r := range rows {
		if w := len([]rune(stripANSI(r))); w > 42 {
			t.Errorf("row %d is %d cells, more than 42", i, w)
		}
	}
	// Scrolling keeps the selection visible.
	q.Select(5, len(jobs))
	rows = q.Rows(jobs, 42, 3, true)
	if len(rows) != 3 || !strings.HasPrefix(stripANSI(rows[2]), "#6") {
		t.Errorf("scrolled rows %q", rows)
	}
}

func TestJobProgress(t *testing.T) {
	var j Job
	ev := func(step int, ms int) engine.Event {
		return engine.Event{Phase: engine.PhaseSample, Step: step, Total: 10, Elapsed: time.Duration(ms) * time.Millisecond}
	}
	j.progress(ev(1, 2000), nil) // start-up included: 0.5 it/s
	if j.Rate != 0.5 {
		t.Errorf("first rate %v", j.Rate)
	}
	j.progress(ev(3, 2500), nil) // 2 steps in 0.5 s
	if j.Rate != 4 || j.ETA != 1750*time.Millisecond || j.Fraction() != 0.3 {
		t.Errorf("rate %v ETA %v fraction %v; want 4, 1.75s, 0.3", j.Rate, j.ETA, j.Fraction())
	}
	j.progress(engine.Event{Phase: engine.PhaseDecode, Elapsed: 5 * time.Second}, nil)
	if j.Step != 3 || j.Phase != engine.PhaseDecode {
		t.Errorf("decode changed the step: %d %s", j.Step, j.Phase)
	}
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{1500 * time.Millisecond: "1.5s", 75 * time.Second: "1:15", 10 * time.Minute: "10:00"} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
}
