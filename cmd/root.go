// Package cmd implements the darkroom command line. main.go only calls
// Execute; every subcommand lives in its own file and is registered in
// NewRootCmd.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"

	"github.com/spf13/cobra"
)

// Version is the release version, set at build time with
// -ldflags "-X github.com/darkroom-ai/darkroom/cmd.Version=v0.1.0".
var Version = "dev"

const rootLong = `darkroom generates images with Stable Diffusion models, in one Go binary:
no Python, no CUDA toolkit to install.

It reads checkpoints as they are published:
  - a single .safetensors file in the A1111 / ComfyUI layout
    (e.g. v1-5-pruned-emaonly.safetensors), or
  - a diffusers folder (model_index.json with unet/, vae/, text_encoder/,
    tokenizer/ inside).
Model paths are taken as given: pass a file or a folder on the command line.

Supported families today: SD1.x. darkroom recognises SD2.x, SDXL, SD3 and Flux
files and says so instead of failing obscurely.`

const rootExample = `  # Open the terminal UI (prompt editor, job queue, device gauges, previews)
  darkroom --models ~/ComfyUI/models

  # Generate an image (the built-in digits model, or -m CHECKPOINT)
  darkroom gen -p "a handwritten digit 7" -o seven.png

  # Download a model into the Hugging Face cache, list what is local
  darkroom pull sd15
  darkroom gen -m sd15 -p "a lighthouse at dusk"
  darkroom ls

  # Inspect a checkpoint: family, components, parameter counts, dtypes
  darkroom info ~/models/v1-5-pruned-emaonly.safetensors
  darkroom info ~/models/stable-diffusion-v1-5

  # Print the version
  darkroom version

  # Enable shell completion (bash, zsh, fish, powershell)
  source <(darkroom completion bash)`

// NewRootCmd builds the darkroom command tree. Subcommands are added here,
// one constructor per file (cmd/info.go: newInfoCmd ...).
func NewRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "darkroom",
		Short:         "Generate images with Stable Diffusion models",
		Long:          rootLong,
		Example:       rootExample,
		Version:       versionString(),
		SilenceUsage:  true, // runtime errors are one line, not a usage dump
		SilenceErrors: true, // Execute prints the error itself
		Args:          noSubcommand,
	}
	tf := &tuiFlags{}
	addTUIFlags(root, tf)
	root.RunE = func(cmd *cobra.Command, args []string) error {
		return runTUI(cmd, tf)
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(flagError)

	root.AddCommand(
		newVersionCmd(),
		newInfoCmd(),
		newGenCmd(),
		newUpscaleCmd(),
		newUpscaleCmd(),
		newDevicesCmd(),
		newBenchCmd(),
		newREPLCmd(),
		newRunCmd(),
		newPullCmd(),
		newLsCmd(),
		newServeCmd(),
		newWorkerCmd(),
		// Register further commands here (tui, repl, run, ...).
	)
	return root
}

func versionString() string {
	return fmt.Sprintf("darkroom %s (%s %s/%s)", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the darkroom version, Go version and platform",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), versionString())
			return err
		},
	}
}

// Execute runs darkroom with the process arguments and returns the exit
// code: 0 on success, 1 after printing one line "darkroom: <error>" to
// standard error.
func Execute() int {
	return Run(os.Args[1:], os.Stdout, os.Stderr)
}

// Run executes the command tree with args (without the program name),
// writing to stdout and stderr, and returns the exit code.
func Run(args []string, stdout, stderr io.Writer) int {
	root := NewRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	// Ctrl-C cancels the running job between steps (the REPL and the TUI
	// handle it themselves).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			fmt.Fprintln(stderr, "darkroom: interrupted")
			return 130
		}
		var ec *exitCodeError
		if errors.As(err, &ec) {
			if ec.code != 0 {
				fmt.Fprintln(stderr, FormatError(err))
			}
			return ec.code
		}
		fmt.Fprintln(stderr, FormatError(err))
		return 1
	}
	return 0
}
