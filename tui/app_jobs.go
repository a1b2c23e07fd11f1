package tui

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"

	tea "charm.land/bubbletea/v2"

	"github.com/darkroom-ai/darkroom/engine"
)

// enqueue adds a job built from the prompt editor.
func (a *App) enqueue() tea.Cmd {
	req, err := a.prompt.Request(a.cfg.RandSeed)
	if err != nil {
		a.setLog(true, "Not enqueued: %v", err)
		return nil
	}
	return a.enqueueRequest(req)
}

// enqueueRequest adds a job and starts it if the worker is idle.
func (a *App) enqueueRequest(req engine.Request) tea.Cmd {
	j := &Job{ID: a.nextID, Req: req, State: JobQueued}
	a.nextID++
	a.jobs = append(a.jobs, j)
	a.setLog(false, "Queued #%d (seed %d).", j.ID, req.Seed)
	return a.startNext()
}

// startNext hands the first queued job to the worker when none runs.
func (a *App) startNext() tea.Cmd {
	if a.running != nil {
		return nil
	}
	for _, j := range a.jobs {
		if j.State != JobQueued {
			continue
		}
		parent := a.ctx
		if j.sj != nil {
			if j.sj.ctx.Err() != nil { // the script stopped waiting
				j.State = JobCancelled
				j.sj.finish(nil, fmt.Errorf("job #%d: %w", j.ID, context.Canceled))
				continue
			}
			parent = j.sj.ctx
		}
		ctx, cancel := context.WithCancel(parent)
		j.State, j.cancel = JobRunning, cancel
		a.running = j
		return a.submit(workItem{ID: j.ID, Req: j.Req, Ctx: ctx})
	}
	return nil
}

func (a *App) job(id int) *Job {
	for _, j := range a.jobs {
		if j.ID == id {
			return j
		}
	}
	for _, j := range a.done {
		if j.ID == id {
			return j
		}
	}
	return nil
}

// onProgress applies a progress event.
func (a *App) onProgress(m jobProgressMsg) {
	j := a.job(m.ID)
	if j == nil || j.State != JobRunning {
		return
	}
	j.progress(m.Event, m.Preview)
	if j.sj != nil {
		j.sj.progress(m.Event)
	}
}

// onDone records a finished job and starts the next one.
func (a *App) onDone(m jobDoneMsg) tea.Cmd {
	j := a.job(m.ID)
	if j == nil {
		return a.startNext()
	}
	if j.cancel != nil {
		j.cancel()
		j.cancel = nil
	}
	j.Elapsed = m.Elapsed
	j.Cancelling = false
	if a.running == j {
		a.running = nil
	}
	if j.sj != nil {
		j.sj.finish(scriptJobResult(j, m))
	}
	switch {
	case m.Cancelled:
		j.State = JobCancelled
		a.setLog(false, "Cancelled #%d.", j.ID)
	case m.Err != nil:
		// The engine's checks of an option (guidance on a model without
		// embedded guidance, …) name it as the options line does.
		err := optionFieldError(m.Err)
		j.State, j.Err = JobFailed, err.Error()
		a.setLog(true, "#%d failed: %v", j.ID, err)
	default:
		j.State = JobDone
		j.Step = j.Total
		j.Images, j.Paths = m.Images, m.Paths
		j.Preview = nil
		if len(m.Images) > 0 {
			a.lastImage, a.shown = m.Images[0], nil
		}
		a.done = slices.Insert(a.done, 0, j)
		a.history.Reset()
		names := make([]string, len(m.Paths))
		for i, p := range m.Paths {
			names[i] = filepath.Base(p)
		}
		a.setLog(false, "#%d done in %s → %s", j.ID, fmtDur(m.Elapsed), joinShort(names))
	}
	return a.startNext()
}

func joinShort(names []string) string {
	switch len(names) {
	case 0:
		return "(nothing saved)"
	case 1:
		return names[0]
	}
	return fmt.Sprintf("%s (+%d more)", names[0], len(names)-1)
}

// cancelRunning stops the running job; it turns cancelled when the worker
// reports back.
func (a *App) cancelRunning() {
	j := a.running
	if j == nil {
		a.setLog(false, "No job is running.")
		return
	}
	if j.cancel != nil {
		j.cancel()
	}
	j.Cancelling = true
	a.setLog(false, "Cancelling #%d…", j.ID)
}

// removeSelected removes the selected queued or finished job from the
// queue, or cancels it if it is running.
func (a *App) removeSelected() {
	i := a.queue.Selected()
	if i < 0 || i >= len(a.jobs) {
		return
	}
	j := a.jobs[i]
	if j.State == JobRunning {
		a.cancelRunning()
		return
	}
	if j.sj != nil && j.State == JobQueued {
		j.sj.finish(nil, fmt.Errorf("job #%d removed from the queue: %w", j.ID, context.Canceled))
	}
	a.jobs = slices.Delete(a.jobs, i, i+1)
	a.queue.Clamp(len(a.jobs))
	a.setLog(false, "Removed #%d.", j.ID)
}

// moveSelected swaps the selected queued job with its queued neighbour.
func (a *App) moveSelected(d int) {
	i := a.queue.Selected()
	k := i + d
	if i < 0 || i >= len(a.jobs) || k < 0 || k >= len(a.jobs) {
		return
	}
	if a.jobs[i].State != JobQueued || a.jobs[k].State != JobQueued {
		a.setLog(false, "Only queued jobs can be reordered.")
		return
	}
	a.jobs[i], a.jobs[k] = a.jobs[k], a.jobs[i]
	a.queue.Select(k, len(a.jobs))
}

// rerun enqueues a copy of j with a new seed.
func (a *App) rerun(j *Job) tea.Cmd {
	if j == nil {
		return nil
	}
	req := j.Req
	req.Seed = a.cfg.RandSeed()
	return a.enqueueRequest(req)
}

// loadParams copies j's parameters into the editor.
func (a *App) loadParams(j *Job) tea.Cmd {
	if j == nil {
		return nil
	}
	a.prompt.Load(j.Req)
	a.setLog(false, "Loaded the parameters of #%d (seed %d).", j.ID, j.Req.Seed)
	return a.setFocus(panePrompt)
}

// selectedJob returns the job under the cursor of the focused list.
func (a *App) selectedJob() *Job {
	switch a.focus {
	case paneQueue:
		if i := a.queue.Selected(); i >= 0 && i < len(a.jobs) {
			return a.jobs[i]
		}
	case paneHistory:
		if i := a.history.Selected(); i >= 0 && i < len(a.done) {
			return a.done[i]
		}
	}
	return nil
}
