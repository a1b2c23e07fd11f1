package cmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/repl"
	"github.com/darkroom-ai/darkroom/script"
	"github.com/darkroom-ai/darkroom/script/dr"
	"github.com/darkroom-ai/darkroom/server"
)

func newREPLCmd() *cobra.Command {
	var (
		device, precision, graphics, history, load string
		serverURL, serverToken                     string
		models                                     []string
	)
	c := &cobra.Command{
		Use:   "repl",
		Short: "Notebook-style Go REPL over the engine API (Yaegi)",
		Long: `A notebook-style REPL: each cell is Go, run by the Yaegi interpreter with
darkroom's engine API in scope (eng, ctx, show, generate, ...). Cells keep
reading while the input is incomplete, state persists across cells, show(img)
draws inline, Ctrl-C interrupts the running cell (a generation stops within a
step) and the session keeps its state. :help lists the commands; :save FILE
writes the session's successful cells as a recipe for 'darkroom run'.
See docs/scripting.md.`,
		Example: "  darkroom repl\n  darkroom repl --load recipes/seed_sweep.go\n  darkroom repl --server http://gpu-box:7860 --server-token s3cretpass",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := repl.Options{
				Stdin: cmd.InOrStdin(), Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr(),
				Graphics: graphics, HistoryFile: history, Load: load, Connect: connectScript,
			}
			if serverURL != "" {
				c, err := connectServer("--server", serverURL, serverToken)
				if err != nil {
					return err
				}
				opts.Generate = c.Generate
				fmt.Fprintf(cmd.ErrOrStderr(), "generate and dr.Generate run on the server %s; eng is this machine's engine\n", c.URL)
			}
			eng, err := engine.Open(engine.Options{ModelDirs: models, Device: device, Precision: precision})
			if err != nil {
				return err
			}
			defer eng.Close()
			if eng.Notice != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), eng.Notice)
			}
			opts.Engine = eng
			// The REPL handles Ctrl-C per cell itself.
			return repl.Run(context.Background(), opts)
		},
	}
	f := c.Flags()
	f.StringVar(&device, "device", "auto", "compute device: auto, cpu or cuda")
	f.StringVar(&precision, "precision", "auto", "GPU precision: auto (fp16), fp16, bf16 or fp32 (parity mode); the CPU always computes in float32")
	f.StringVar(&graphics, "graphics", "auto", "inline images: auto, kitty, sixel, iterm, halfblock or none")
	f.StringVar(&history, "history", "", `history file ("" = `+repl.DefaultHistoryFile()+`, "-" = none)`)
	f.StringVar(&load, "load", "", "a script to :load before the first prompt")
	f.StringSliceVar(&models, "models", nil, "model directories (default "+engine.DefaultModelDir()+")")
	f.StringVar(&serverURL, "server", "", "run the jobs of generate and dr.Generate on a darkroom serve at this URL (http://HOST:7860)")
	f.StringVar(&serverToken, "server-token", "", "bearer token for --server (or DARKROOM_TOKEN)")
	return c
}

// connectServer returns a client of the darkroom server at url, with
// token (or DARKROOM_TOKEN), once it has answered; what names the flag
// or call that gave the URL in the error.
func connectServer(what, url, token string) (*server.Client, error) {
	if token == "" {
		token = os.Getenv("DARKROOM_TOKEN")
	}
	c := server.NewClient(url, token)
	if c.ListModels() == nil {
		return nil, fmt.Errorf("%s %s: no answer from GET /v1/models (is darkroom serve running there, is the token right?)", what, url)
	}
	return c, nil
}

// connectScript is dr.Server for the REPL and recipes.
func connectScript(url, token string) (dr.Remote, error) {
	return connectServer("dr.Server", url, token)
}

// runServerFlags takes darkroom run's own flags off the front of its
// arguments (before the recipe file): --server URL and --server-token
// TOKEN, also as --flag=value.
func runServerFlags(args []string) (url, token string, rest []string, err error) {
	for len(args) > 0 {
		name, value, hasValue := strings.Cut(args[0], "=")
		if name != "--server" && name != "--server-token" {
			break
		}
		if !hasValue {
			if len(args) < 2 {
				return "", "", nil, fmt.Errorf("%s needs a value (darkroom run %s VALUE RECIPE.go)", name, name)
			}
			value, args = args[1], args[1:]
		}
		args = args[1:]
		if name == "--server" {
			url = value
		} else {
			token = value
		}
	}
	return url, token, args, nil
}

func newRunCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "run [--server URL [--server-token TOKEN]] RECIPE.go [ARGS...]",
		Short: "Run a Go recipe script non-interactively",
		Long: `Run a recipe (a Go script using the engine API, as written by the REPL's
:save or found in recipes/) with the Yaegi interpreter. Everything after the
file name goes to the script (dr.Args()); the exit code is the script's
(os.Exit), 1 on an error, 130 when interrupted. Environment:
DARKROOM_DEVICE (auto, cpu, cuda), DARKROOM_PRECISION (auto, fp16, bf16,
fp32) and DARKROOM_GRAPHICS pick the device, the GPU precision and how
dr.Show draws.

--server URL (before the recipe file) runs the recipe's dr.Generate (and
generate) jobs on a darkroom serve there; --server-token (or
DARKROOM_TOKEN) is its bearer token. Models the recipe loads itself
(dr.Engine().Load) run on this machine.`,
		Example:            "  darkroom run recipes/seed_sweep.go -out sweep.png\n  darkroom run --server http://gpu-box:7860 mine.go",
		DisableFlagParsing: true, // the recipe's flags belong to the recipe
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("darkroom run needs a recipe file (a .go file), e.g. darkroom run recipes/seed_sweep.go")
			}
			url, token, args, err := runServerFlags(args)
			if err != nil {
				return err
			}
			if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
				return cmd.Help()
			}
			if len(args) == 0 {
				return errors.New("darkroom run needs a recipe file (a .go file) after its flags, e.g. darkroom run --server URL recipes/seed_sweep.go")
			}
			if token != "" && url == "" {
				return errors.New("--server-token: give --server URL too (the server the token is for)")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			graphics := os.Getenv("DARKROOM_GRAPHICS")
			if graphics == "" {
				graphics = "auto"
			}
			opts := script.Options{
				Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr(),
				EngineOptions: engine.Options{Device: os.Getenv("DARKROOM_DEVICE"), Precision: os.Getenv("DARKROOM_PRECISION")},
				Show:          repl.ShowFunc(cmd.OutOrStdout(), graphics),
				Connect:       connectScript,
			}
			if url != "" {
				c, err := connectServer("--server", url, token)
				if err != nil {
					return err
				}
				opts.Generate = c.Generate
			}
			err = script.RunFile(ctx, args[0], args[1:], opts)
			var ee *script.ExitError
			switch {
			case errors.Is(err, flag.ErrHelp):
				// The recipe's flag set printed its usage for -h.
				return nil
			case errors.As(err, &ee):
				return &exitCodeError{code: ee.Code, err: err}
			case errors.Is(err, script.ErrInterrupted):
				return &exitCodeError{code: 130, err: err}
			}
			return withRecipeFlagNames(err, args[1:])
		},
	}
}

// withRecipeFlagNames names the recipe's flag in an engine.FieldError that
// a recipe's request got from one of its flags: `sampler "nope": unknown`
// becomes `recipe flag -samplers: sampler "nope": unknown` when the
// recipe was given -samplers nope (or a comma-separated list holding
// nope). Errors whose value no recipe flag carried are returned as they
// are.
func withRecipeFlagNames(err error, args []string) error {
	var fe *engine.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	value, ok := fe.Value.(string)
	if !ok {
		value = fmt.Sprint(fe.Value)
	}
	if fe.Value == nil || value == "" {
		return err
	}
	name := recipeFlagFor(value, args)
	if name == "" {
		return err
	}
	msg := strings.Replace(err.Error(), fe.Error(), "recipe flag "+name+": "+fe.Error(), 1)
	return &renamedError{msg: msg, err: err}
}

// recipeFlagFor returns the flag of args ("-name") whose value is value or
// a comma-separated list holding it, or "".
func recipeFlagFor(value string, args []string) string {
	for i, a := range args {
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			continue
		}
		name, v, hasValue := strings.Cut(a, "=")
		if !hasValue {
			if i+1 >= len(args) {
				continue
			}
			v = args[i+1]
		}
		if v == value || slices.Contains(strings.Split(v, ","), value) {
			return "-" + strings.TrimLeft(name, "-")
		}
	}
	return ""
}

// exitCodeError carries a process exit code other than 1.
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string { return e.err.Error() }
func (e *exitCodeError) Unwrap() error { return e.err }
