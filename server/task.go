package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

// Task is one job as a worker receives it: in process, or as a JetStream
// message (its JSON). Images travel as bytes, never as paths on the
// server's disk.
type Task struct {
	ID string `json:"id"`
	// Client is the client the job belongs to.
	Client  string         `json:"client"`
	Request engine.Request `json:"request"`
	// Given lists the request fields the client set; the model's own
	// defaults (size, steps, cfg, sampler, scheduler) replace the others
	// once the worker has loaded the model.
	Given []string `json:"given,omitempty"`
	// InitImage and Mask are image files (PNG, JPEG, GIF) for img2img and
	// inpainting.
	InitImage []byte `json:"init_image,omitempty"`
	Mask      []byte `json:"mask,omitempty"`
	// MaxPixels bounds the image size once the model's defaults apply (0:
	// no bound).
	MaxPixels int `json:"max_pixels,omitempty"`
	// Origin names the server that accepted the task (JetStreamOptions'
	// Origin): after a restart it takes back its own tasks only.
	Origin string `json:"origin,omitempty"`
}

// Outcome is what a worker reports for a task.
type Outcome struct {
	ID string `json:"id"`
	// Client is the task's client: a server that did not take the job (it
	// restarted) checks ownership with it.
	Client string `json:"client,omitempty"`
	// Images are PNG files with the A1111 "parameters" and the darkroom
	// request chunks; Infotexts their A1111 parameters text.
	Images    [][]byte `json:"images,omitempty"`
	Infotexts []string `json:"infotexts,omitempty"`
	// Request is the request as run (model defaults applied).
	Request engine.Request `json:"request"`
	// ModelName is the model's name (its file name without extension).
	ModelName string `json:"model_name,omitempty"`
	// Error is why the job failed ("" on success); Field names the
	// request field at fault, when one is; Cancelled says the job was
	// cancelled.
	Error     string `json:"error,omitempty"`
	Field     string `json:"field,omitempty"`
	Cancelled bool   `json:"cancelled,omitempty"`
	// Worker names the worker that ran the job.
	Worker  string        `json:"worker,omitempty"`
	Elapsed time.Duration `json:"elapsed,omitempty"`
}

// Progress is a step of a running task.
type Progress struct {
	ID     string `json:"id"`
	Worker string `json:"worker,omitempty"`
	Phase  string `json:"phase"`
	Step   int    `json:"step"`
	Total  int    `json:"total"`
	// Preview is a PNG of the first image's current estimate (the latent
	// preview), during sampling.
	Preview []byte `json:"preview,omitempty"`
}

// defaultedFields are the request fields a model has its own defaults for.
var defaultedFields = []string{"width", "height", "steps", "cfg", "sampler", "scheduler"}

// Runner runs tasks on one engine (one device). Its engine must be opened
// with NamesOnly, so that a task's file names stay inside the model
// directories.
type Runner struct {
	Engine *engine.Engine
	// Name identifies the worker in outcomes and /v1/devices.
	Name string
	// Scratch is the folder init images and masks are written to while a
	// task runs ("": the system's temporary folder).
	Scratch string
	// PreviewEvery is the least time between two previews (0: 200ms).
	PreviewEvery time.Duration
}

// Run runs the task and reports its progress (progress may be nil). It
// never panics: an engine panic becomes the outcome's error.
func (r *Runner) Run(ctx context.Context, t Task, progress func(Progress)) (out Outcome) {
	start := time.Now()
	out = Outcome{ID: t.ID, Client: t.Client, Request: t.Request, Worker: r.Name}
	defer func() {
		if p := recover(); p != nil {
			out.Error = fmt.Sprintf("engine panic: %v", p)
		}
		out.Elapsed = time.Since(start)
	}()
	fail := func(err error) Outcome {
		out.Error = err.Error()
		var fe *engine.FieldError
		if errors.As(err, &fe) {
			out.Field = fe.Field
		}
		out.Cancelled = errors.Is(err, context.Canceled) || ctx.Err() != nil
		return out
	}
	req := t.Request
	// Images come as bytes only: a path in a task (from anyone on the
	// queue) is never read.
	req.InitImage, req.Mask = "", ""
	out.Request.InitImage, out.Request.Mask = "", ""
	for _, f := range []struct {
		data []byte
		path *string
		name string
	}{{t.InitImage, &req.InitImage, "init"}, {t.Mask, &req.Mask, "mask"}} {
		if f.data == nil {
			continue
		}
		tmp, err := os.CreateTemp(r.Scratch, "darkroom-"+f.name+"-*")
		if err != nil {
			return fail(fmt.Errorf("scratch file: %w", err))
		}
		defer os.Remove(tmp.Name())
		_, err = tmp.Write(f.data)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fail(fmt.Errorf("scratch file: %w", err))
		}
		*f.path = tmp.Name()
	}
	if slices.ContainsFunc(defaultedFields, func(f string) bool { return !slices.Contains(t.Given, f) }) {
		m, err := r.Engine.Load(ctx, req.Model)
		if err != nil {
			return fail(err)
		}
		d := m.DefaultRequest()
		for _, name := range defaultedFields {
			if !slices.Contains(t.Given, name) {
				f, _ := engine.FieldByName(name)
				f.Copy(&req, &d)
			}
		}
		if req.InitImage != "" && !slices.Contains(t.Given, "width") && !slices.Contains(t.Given, "height") {
			req.Width, req.Height = 0, 0 // the init image's size
		}
	}
	if req.InitImage == "" {
		if err := checkPixels(req, t.MaxPixels); err != nil {
			return fail(err)
		}
	}
	every := r.PreviewEvery
	if every == 0 {
		every = 200 * time.Millisecond
	}
	var last time.Time
	res, err := r.Engine.Generate(ctx, req, func(ev engine.Event) {
		if progress == nil {
			return
		}
		p := Progress{ID: t.ID, Worker: r.Name, Phase: string(ev.Phase), Step: ev.Step, Total: ev.Total}
		if ev.Denoised != nil && (time.Since(last) >= every || ev.Step == ev.Total) {
			if img := engine.LatentPreview(ev.Format, ev.Denoised, ev.LatentShape, 0); img != nil {
				var b bytes.Buffer
				if png.Encode(&b, img) == nil {
					p.Preview = b.Bytes()
					last = time.Now()
				}
			}
		}
		progress(p)
	})
	if err != nil {
		return fail(err)
	}
	m, err := r.Engine.LoadRequest(ctx, res.Request)
	if err != nil {
		return fail(err)
	}
	hash, _ := m.Hash()
	out.ModelName = strings.TrimSuffix(filepath.Base(m.Name), ".safetensors")
	out.Request = res.Request
	images := res.Images
	if res.Request.BatchIndex > 0 && len(images) >= res.Request.BatchIndex {
		images = images[res.Request.BatchIndex-1 : res.Request.BatchIndex]
	}
	for i, img := range images {
		stored := res.Request
		// The request text never names a file on the server.
		stored.InitImage, stored.Mask = "", ""
		if res.Request.Batch > 1 && res.Request.BatchIndex == 0 {
			stored.BatchIndex = i + 1
		}
		b, text, err := encodeImage(img, stored, hash, out.ModelName)
		if err != nil {
			return fail(err)
		}
		out.Images = append(out.Images, b)
		out.Infotexts = append(out.Infotexts, text)
	}
	out.Request.InitImage, out.Request.Mask = "", ""
	return out
}

// encodeImage encodes img as a PNG carrying the A1111 parameters and the
// darkroom request, as engine.SavePNG writes files.
func encodeImage(img image.Image, req engine.Request, hash, model string) ([]byte, string, error) {
	js, err := json.Marshal(req)
	if err != nil {
		return nil, "", fmt.Errorf("encode request: %w", err)
	}
	text := engine.A1111Parameters(req, hash, model)
	var b bytes.Buffer
	if err := engine.EncodePNG(&b, img, map[string]string{engine.ChunkParameters: text, engine.ChunkDarkroom: string(js)}); err != nil {
		return nil, "", fmt.Errorf("encode PNG: %w", err)
	}
	return b.Bytes(), text, nil
}
