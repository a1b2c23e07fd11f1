package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/draw"
	"image/png"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

// Client is a Go client of a darkroom server's own API (/v1/...): it
// submits engine requests as jobs and follows their progress. It stands
// in for an engine where a frontend needs only ListModels, ModelDirs and
// Generate (the TUI's Pipeline: `darkroom --server URL`).
type Client struct {
	// URL is the server's base URL ("http://gpu-box:7860").
	URL string
	// Token is the bearer token ("" for a loopback server without one).
	Token string
	// HTTP is the HTTP client (nil: http.DefaultClient).
	HTTP *http.Client

	mu sync.Mutex
	// following are the ids of the jobs Generate calls follow now.
	following map[string]bool
}

// NewClient returns a client of the server at url.
func NewClient(url, token string) *Client {
	return &Client{URL: strings.TrimRight(url, "/"), Token: token}
}

func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, r)
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", c.URL, err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", c.URL, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e errorBody
		b, _ := io.ReadAll(resp.Body)
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		if e.Field != "" {
			return nil, &engine.FieldError{Field: e.Field, Msg: e.Error}
		}
		return nil, fmt.Errorf("server %s: %s %s: %s (%s)", c.URL, method, path, e.Error, resp.Status)
	}
	return resp, nil
}

// ListModels lists the server's models by name (Path is the name, which
// requests take). It returns nil when the server cannot be reached.
func (c *Client) ListModels() []engine.ModelEntry {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.do(ctx, "GET", "/v1/models", nil)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var ms struct{ Models []modelView }
	if json.NewDecoder(resp.Body).Decode(&ms) != nil {
		return nil
	}
	var out []engine.ModelEntry
	for _, m := range ms.Models {
		out = append(out, engine.ModelEntry{Name: m.Name, Path: m.Name, Size: m.Size, Broken: m.Broken})
	}
	return out
}

// Devices returns the server machine's devices and its workers.
func (c *Client) Devices(ctx context.Context) ([]Device, []WorkerInfo, error) {
	resp, err := c.do(ctx, "GET", "/v1/devices", nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	var d struct {
		Devices []Device
		Workers []WorkerInfo
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return nil, nil, fmt.Errorf("server %s: the answer to GET /v1/devices: %w", c.URL, err)
	}
	return d.Devices, d.Workers, nil
}

// ModelDirs returns the server's URL: its models are looked up there.
func (c *Client) ModelDirs() []string { return []string{c.URL} }

// Submit queues req as a job and returns its id. An init image or mask
// named by req (a local file) is sent as its bytes.
func (c *Client) Submit(ctx context.Context, req engine.Request) (string, error) {
	body := jobBody{Request: req}
	for _, f := range []struct {
		path string
		dst  *string
		name string
	}{{req.InitImage, &body.InitImage, "init_image"}, {req.Mask, &body.Mask, "mask"}} {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return "", &engine.FieldError{Field: f.name, Value: f.path, Msg: err.Error()}
		}
		*f.dst = base64.StdEncoding.EncodeToString(b)
	}
	body.Request.InitImage, body.Request.Mask = "", ""
	resp, err := c.do(ctx, "POST", "/v1/jobs", body)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var v jobView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", fmt.Errorf("server %s: the answer to POST /v1/jobs: %w", c.URL, err)
	}
	return v.ID, nil
}

// Generate runs req on the server: it submits the job, reports its steps
// through onEvent (Phase, Step and Total, and with each new latent
// preview the server sends, Preview: the decoded image; the latents
// themselves stay on the server) and returns its images. Cancelling ctx
// cancels the job.
func (c *Client) Generate(ctx context.Context, req engine.Request, onEvent func(engine.Event)) (*engine.Result, error) {
	id, err := c.Submit(ctx, req)
	if err != nil {
		return nil, err
	}
	c.follow(id, true)
	defer c.follow(id, false)
	defer func() {
		if ctx.Err() != nil {
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if resp, err := c.do(dctx, "DELETE", "/v1/jobs/"+id, nil); err == nil {
				resp.Body.Close()
			}
		}
	}()
	resp, err := c.do(ctx, "GET", "/v1/jobs/"+id+"/events", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 256<<20)
	start := time.Now()
	lastStep, lastPhase := 0, ""
	var lastPreview []byte
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var v jobView
		if err := json.Unmarshal([]byte(data), &v); err != nil {
			return nil, fmt.Errorf("server %s: job %s: %w", c.URL, id, err)
		}
		// A new step, or a new preview of the same step (the stream sends
		// the job's state, so close changes may arrive as one).
		newPreview := v.Preview != nil && !bytes.Equal(v.Preview, lastPreview)
		if onEvent != nil && (v.Step != lastStep || newPreview) && v.Total > 0 {
			lastStep = v.Step
			ev := engine.Event{Phase: engine.PhaseSample, Step: v.Step, Total: v.Total, Elapsed: time.Since(start)}
			if newPreview {
				lastPreview = v.Preview
				// A preview that does not decode is left out: the job
				// goes on, and so does its next preview.
				if img, err := png.Decode(bytes.NewReader(v.Preview)); err == nil {
					ev.Preview = toNRGBA(img)
				}
			}
			onEvent(ev)
		}
		if onEvent != nil && v.Phase != lastPhase && v.Phase != "" && v.Phase != string(engine.PhaseSample) {
			lastPhase = v.Phase
			onEvent(engine.Event{Phase: engine.Phase(v.Phase), Elapsed: time.Since(start)})
		}
		switch v.State {
		case StateDone:
			return c.result(v)
		case StateFailed:
			if v.Field != "" {
				return nil, &engine.FieldError{Field: v.Field, Msg: v.Error}
			}
			return nil, fmt.Errorf("server %s: job %s: %s", c.URL, id, v.Error)
		case StateCancelled:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("server %s: job %s: %w", c.URL, id, context.Canceled)
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("server %s: job %s: %w", c.URL, id, err)
	}
	return nil, fmt.Errorf("server %s: job %s: the event stream ended early", c.URL, id)
}

// follow records that a Generate call follows job id (on), or no longer
// does.
func (c *Client) follow(id string, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.following == nil {
		c.following = map[string]bool{}
	}
	if on {
		c.following[id] = true
	} else {
		delete(c.following, id)
	}
}

// Queue returns the server's queue (GET /v1/queue): the running jobs,
// then the waiting ones in the order the workers get them, of every
// client. Other clients' jobs come without their requests. Jobs this
// Client's Generate calls follow are marked Here.
func (c *Client) Queue(ctx context.Context) ([]QueueJob, error) {
	resp, err := c.do(ctx, "GET", "/v1/queue", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var q struct{ Jobs []QueueJob }
	if err := json.NewDecoder(resp.Body).Decode(&q); err != nil {
		return nil, fmt.Errorf("server %s: the answer to GET /v1/queue: %w", c.URL, err)
	}
	c.mu.Lock()
	for i := range q.Jobs {
		q.Jobs[i].Here = c.following[q.Jobs[i].ID]
	}
	c.mu.Unlock()
	return q.Jobs, nil
}

// result decodes a finished job's images.
func (c *Client) result(v jobView) (*engine.Result, error) {
	res := &engine.Result{}
	if v.Request != nil {
		res.Request = *v.Request
	}
	for i, b := range v.Images {
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("server %s: job %s: image %d: %w", c.URL, v.ID, i, err)
		}
		res.Images = append(res.Images, toNRGBA(img))
	}
	if len(res.Images) == 0 {
		return nil, errors.New("server " + c.URL + ": job " + v.ID + ": no images")
	}
	return res, nil
}

// toNRGBA returns img as an *image.NRGBA, converting it if it is another
// kind of image.
func toNRGBA(img image.Image) *image.NRGBA {
	if n, ok := img.(*image.NRGBA); ok {
		return n
	}
	n := image.NewNRGBA(img.Bounds())
	draw.Draw(n, n.Bounds(), img, img.Bounds().Min, draw.Src)
	return n
}
