package cmd

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/server"
)

// serveFlags are the flags of `darkroom serve`.
type serveFlags struct {
	listen      string
	tokens      []string
	adminTokens []string
	models      []string
	devices     []string
	precision   string
	model       string
	queue       int
	maxSteps    int
	maxPixels   int
	maxBatch    int
	maxBodyMiB  int
	nats        natsFlags
}

// natsFlags are the JetStream flags of serve and worker.
type natsFlags struct {
	url     string
	token   string
	listen  string
	store   string
	ackWait time.Duration
}

func addNATSFlags(c *cobra.Command, f *natsFlags, serve bool) {
	fl := c.Flags()
	if serve {
		fl.StringVar(&f.url, "nats", "", "NATS server whose JetStream holds the job queue: nats://HOST:4222 joins a cluster, \"off\" keeps the queue in process (default: an embedded nats-server)")
		fl.StringVar(&f.listen, "nats-listen", "127.0.0.1:4222", "address of the embedded nats-server, which other machines' workers join (darkroom worker --nats nats://HOST:4222)")
		fl.StringVar(&f.store, "nats-store", filepath.Join(filepath.Dir(engine.DefaultModelDir()), "jetstream"), "folder of the embedded nats-server's JetStream files (queued jobs and results survive restarts)")
	} else {
		fl.StringVar(&f.url, "nats", "", "NATS server of the job queue (nats://HOST:4222), as darkroom serve prints it")
	}
	fl.StringVar(&f.token, "nats-token", "", "NATS token: required of clients by the embedded server, sent to a joined one (or DARKROOM_NATS_TOKEN)")
	fl.DurationVar(&f.ackWait, "ack-wait", 30*time.Second, "how long a silent worker keeps a job before it goes to another worker")
}

// tokenValue is --nats-token, or DARKROOM_NATS_TOKEN.
func (f *natsFlags) tokenValue() string {
	if f.token != "" {
		return f.token
	}
	return os.Getenv("DARKROOM_NATS_TOKEN")
}

const serveLong = `Serve darkroom over HTTP: a JSON API that A1111 clients (webuiapi, Krita
plugins, bots, notebooks) can use as they use A1111's (/sdapi/v1/txt2img,
img2img, sd-models, samplers, schedulers, options, progress, interrupt), and
darkroom's own (/v1/jobs with the engine request as JSON, a Server-Sent
Events progress stream, /v1/models, /v1/devices, /v1/admin/...). See
docs/serve.md for the routes.

Jobs wait in a bounded queue (429 beyond --queue) that serves clients
round-robin, and run on one worker per --device, each with its own model
cache. Models and other files are named, never given as paths: names are
looked up in the --models directories only.

Without --token the server answers every caller and may only listen on a
loopback address. With tokens (--token NAME:SECRET, or DARKROOM_TOKENS as a
comma-separated list), requests need "Authorization: Bearer SECRET"; a
client cancels only its own jobs; --admin-token callers may use the admin
routes and cancel any job.`

const serveExample = `  # Serve on loopback with the built-in model and the GPU (or CPU)
  darkroom serve

  # A GPU box on the network: tokens, a model folder, both GPUs
  darkroom serve --listen 0.0.0.0:7860 --token alice:s3cretpass --admin-token root:r00tpass \
      --models ~/ComfyUI/models --device cuda:0 --device cuda:1

  # A front box whose jobs run on other machines' workers
  darkroom serve --device none --nats-listen 0.0.0.0:4222 --nats-token NATSSECRET
  darkroom worker --nats nats://front:4222 --nats-token NATSSECRET   # on each GPU box

  curl -s localhost:7860/sdapi/v1/txt2img -d '{"prompt": "a 7", "steps": 8, "width": 32, "height": 32}'`

func newServeCmd() *cobra.Command {
	f := &serveFlags{}
	c := &cobra.Command{
		Use:     "serve",
		Short:   "Serve an HTTP API (A1111-compatible and darkroom's own) with one worker per device",
		Long:    serveLong,
		Example: serveExample,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServe(cmd, f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:7860", "address to listen on (HOST:PORT); a non-loopback address needs --token")
	fl.StringArrayVar(&f.tokens, "token", nil, "bearer token NAME:SECRET (or SECRET, named \"default\") a client authenticates with; repeat for several clients")
	fl.StringArrayVar(&f.adminTokens, "admin-token", nil, "bearer token (NAME:SECRET or SECRET) that may also use /v1/admin and cancel any job")
	fl.StringSliceVar(&f.models, "models", nil, "model directories requests name models in (default "+engine.DefaultModelDir()+")")
	fl.StringArrayVar(&f.devices, "device", []string{"auto"}, "a worker's device: auto (every GPU, else the CPU), cpu, cuda (every GPU), cuda:N, or none (no worker here: other machines' darkroom worker run the jobs); repeat for several")
	fl.StringVar(&f.precision, "precision", "auto", "GPU precision: auto (fp16), fp16, bf16 or fp32")
	fl.StringVar(&f.model, "model", "", "model of A1111 requests that name none (default: the built-in model)")
	fl.IntVar(&f.queue, "queue", 64, "jobs that may wait; more get 429")
	fl.IntVar(&f.maxSteps, "max-steps", 150, "most sampling steps a request may ask for")
	fl.IntVar(&f.maxPixels, "max-pixels", 2048*2048, "most pixels (width×height, hires fix included) of an image")
	fl.IntVar(&f.maxBatch, "max-batch", 8, "most images of one request")
	fl.IntVar(&f.maxBodyMiB, "max-body", 32, "largest request body in MiB")
	addNATSFlags(c, &f.nats, true)
	return c
}

// parseTokens reads NAME:SECRET (or SECRET) tokens.
func parseTokens(flag string, values []string, admin bool) ([]server.Token, error) {
	var out []server.Token
	for _, v := range values {
		name, secret, ok := strings.Cut(v, ":")
		if !ok {
			name, secret = "default", v
			if admin {
				name = "admin"
			}
		}
		if name == "" || secret == "" {
			return nil, fmt.Errorf("--%s %q: want NAME:SECRET or SECRET", flag, v)
		}
		if len(secret) < 8 {
			return nil, fmt.Errorf("--%s %s: the secret is shorter than 8 characters", flag, name)
		}
		out = append(out, server.Token{Name: name, Secret: secret, Admin: admin})
	}
	return out, nil
}

func (f *serveFlags) options(cmd *cobra.Command) (server.Options, error) {
	values := f.tokens
	if env := os.Getenv("DARKROOM_TOKENS"); env != "" {
		values = append(values, strings.Split(env, ",")...)
	}
	tokens, err := parseTokens("token", values, false)
	if err != nil {
		return server.Options{}, err
	}
	admins, err := parseTokens("admin-token", f.adminTokens, true)
	if err != nil {
		return server.Options{}, err
	}
	for name, v := range map[string]int{"queue": f.queue, "max-steps": f.maxSteps, "max-pixels": f.maxPixels, "max-batch": f.maxBatch, "max-body": f.maxBodyMiB} {
		if v < 1 {
			return server.Options{}, fmt.Errorf("--%s %d: want a positive number", name, v)
		}
	}
	return server.Options{
		Tokens: append(tokens, admins...), ModelDirs: f.models, QueueSize: f.queue, DefaultModel: f.model,
		Limits: server.Limits{MaxBody: int64(f.maxBodyMiB) << 20, MaxPixels: f.maxPixels, MaxSteps: f.maxSteps, MaxBatch: f.maxBatch},
		Log:    slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)),
	}, nil
}

func runServe(cmd *cobra.Command, f *serveFlags) error {
	opts, err := f.options(cmd)
	if err != nil {
		return err
	}
	if len(opts.Tokens) == 0 && !server.IsLoopback(f.listen) {
		return fmt.Errorf("--listen %s: not a loopback address, so a --token is required", f.listen)
	}
	var runners []*server.Runner
	if !(len(f.devices) == 1 && f.devices[0] == "none") {
		if runners, err = server.OpenRunners(f.devices, engine.Options{ModelDirs: f.models, Precision: f.precision}); err != nil {
			return err
		}
	}
	defer func() {
		for _, r := range runners {
			r.Engine.Close()
		}
	}()
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM)
	defer stop()
	var back server.Backend
	queue := "in process"
	switch f.nats.url {
	case "off":
		if len(runners) == 0 {
			return fmt.Errorf("--device none needs a NATS queue for remote workers: drop --nats off")
		}
		back = server.NewLocal(runners...)
	default:
		url := f.nats.url
		if url == "" {
			token := f.nats.tokenValue()
			if host, _, err := net.SplitHostPort(f.nats.listen); err == nil && token == "" && !server.IsLoopback(f.nats.listen) {
				return fmt.Errorf("--nats-listen %s: not a loopback address (%s), so a --nats-token is required", f.nats.listen, host)
			}
			ns, err := server.StartEmbedded(server.EmbeddedOptions{Listen: f.nats.listen, StoreDir: f.nats.store, Token: token})
			if err != nil {
				return err
			}
			defer ns.Shutdown()
			url = ns.ClientURL()
			queue = "JetStream (embedded nats-server " + url + ")"
		} else {
			queue = "JetStream (" + url + ")"
		}
		nc, err := server.Dial(url, f.nats.tokenValue())
		if err != nil {
			return err
		}
		defer nc.Close()
		jopts := server.JetStreamOptions{AckWait: f.nats.ackWait, Log: opts.Log}
		js, err := server.NewJetStream(ctx, nc, jopts)
		if err != nil {
			return err
		}
		back = js
		var wg sync.WaitGroup
		defer func() { stop(); wg.Wait() }()
		for _, r := range runners {
			wg.Go(func() { server.RunWorker(ctx, nc, r, jopts) })
		}
	}
	s, err := server.New(opts, back)
	if err != nil {
		return err
	}
	defer s.Close()
	names := []string{}
	for _, r := range runners {
		names = append(names, r.Name+" ("+r.Engine.Device().Name()+")")
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "darkroom serve: http://%s, queue: %s, workers here: %s\n", f.listen, queue, strings.Join(names, ", "))
	return s.ListenAndServe(ctx, f.listen)
}

// workerFlags are the flags of `darkroom worker`.
type workerFlags struct {
	nats      natsFlags
	models    []string
	devices   []string
	precision string
}

func newWorkerCmd() *cobra.Command {
	f := &workerFlags{}
	c := &cobra.Command{
		Use:   "worker",
		Short: "Run jobs of a darkroom serve queue (NATS JetStream) on this machine's devices",
		Long: `Join the job queue of a darkroom serve (its NATS JetStream) and run its jobs
on this machine: one worker per --device, each with its own model cache.
Models are named by the server's clients and looked up in this machine's
--models directories. A job is acknowledged once its images are stored in
JetStream; a worker that dies mid-job leaves it to another after --ack-wait.`,
		Example: `  darkroom worker --nats nats://gpu-box:4222 --nats-token SECRET --models ~/models`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runWorker(cmd, f)
		},
	}
	fl := c.Flags()
	fl.StringSliceVar(&f.models, "models", nil, "model directories (default "+engine.DefaultModelDir()+")")
	fl.StringArrayVar(&f.devices, "device", []string{"auto"}, "a worker's device: auto (every GPU, else the CPU), cpu, cuda or cuda:N; repeat for several")
	fl.StringVar(&f.precision, "precision", "auto", "GPU precision: auto (fp16), fp16, bf16 or fp32")
	addNATSFlags(c, &f.nats, false)
	return c
}

func runWorker(cmd *cobra.Command, f *workerFlags) error {
	if f.nats.url == "" {
		return fmt.Errorf("--nats: the NATS server of the queue is needed (nats://HOST:4222)")
	}
	runners, err := server.OpenRunners(f.devices, engine.Options{ModelDirs: f.models, Precision: f.precision})
	if err != nil {
		return err
	}
	defer func() {
		for _, r := range runners {
			r.Engine.Close()
		}
	}()
	nc, err := server.Dial(f.nats.url, f.nats.tokenValue())
	if err != nil {
		return err
	}
	defer nc.Close()
	host, _ := os.Hostname()
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM)
	defer stop()
	errs := make(chan error, len(runners))
	for _, r := range runners {
		r.Name = host + "/" + r.Name
		fmt.Fprintf(cmd.ErrOrStderr(), "darkroom worker %s on %s\n", r.Name, f.nats.url)
		go func() {
			errs <- server.RunWorker(ctx, nc, r, server.JetStreamOptions{AckWait: f.nats.ackWait, Log: log})
		}()
	}
	var first error
	for range runners {
		if err := <-errs; err != nil && first == nil && ctx.Err() == nil {
			first = err
			stop()
		}
	}
	return first
}
