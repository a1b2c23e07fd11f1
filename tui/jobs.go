package tui

import (
	"context"
	"fmt"
	"image"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

// JobState is where a job is in its life.
type JobState int

// Job states.
const (
	JobQueued JobState = iota
	JobRunning
	JobDone
	JobFailed
	JobCancelled
)

var jobStateNames = [...]string{"queued", "running", "done", "failed", "cancelled"}

// String returns the state's name.
func (s JobState) String() string {
	if s < 0 || int(s) >= len(jobStateNames) {
		return fmt.Sprintf("JobState(%d)", int(s))
	}
	return jobStateNames[s]
}

// Job is one request in the queue.
type Job struct {
	ID    int
	Req   engine.Request
	State JobState
	// Phase, Step and Total report the running job's progress.
	Phase       engine.Phase
	Step, Total int
	// Rate is sampling steps per second; ETA the estimated time left.
	Rate float64
	ETA  time.Duration
	// Elapsed is the time since the job started (total once finished).
	Elapsed time.Duration
	Err     string
	// Preview is the latest live preview; Images and Paths the results.
	Preview    *image.NRGBA
	Images     []*image.NRGBA
	Paths      []string
	Cancelling bool
	// Script marks a job submitted by a script of the `:` command line.
	Script bool
	// Waiting is set while a running job waits in a server's queue
	// (`darkroom --server`), Ahead jobs before it.
	Waiting bool
	Ahead   int

	firstStep    int
	firstElapsed time.Duration
	cancel       context.CancelFunc
	sj           *scriptJob // the waiting script call, for script jobs
}

// progress applies a progress event to a running job.
func (j *Job) progress(ev engine.Event, preview *image.NRGBA) {
	j.Phase = ev.Phase
	j.Elapsed = ev.Elapsed
	if preview != nil {
		j.Preview = preview
	}
	if ev.Phase != engine.PhaseSample || ev.Total == 0 {
		return
	}
	j.Step, j.Total = ev.Step, ev.Total
	if j.firstStep == 0 {
		// The first step's time includes start-up; measure the rate from it.
		j.firstStep, j.firstElapsed = ev.Step, ev.Elapsed
		if ev.Elapsed > 0 {
			j.Rate = float64(ev.Step) / ev.Elapsed.Seconds()
		}
	} else if dt := ev.Elapsed - j.firstElapsed; dt > 0 && ev.Step > j.firstStep {
		j.Rate = float64(ev.Step-j.firstStep) / dt.Seconds()
	}
	if j.Rate > 0 {
		j.ETA = time.Duration(float64(ev.Total-ev.Step) / j.Rate * float64(time.Second))
	}
}

// Fraction is the job's completion in 0..1.
func (j *Job) Fraction() float64 {
	switch {
	case j.State == JobDone:
		return 1
	case j.Total == 0:
		return 0
	}
	return float64(j.Step) / float64(j.Total)
}
