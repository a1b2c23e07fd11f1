package cmd

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func aliasTable() string {
	var b strings.Builder
	for _, a := range engine.PullAliases() {
		what := a.Repo
		if a.File != "" {
			what += "/" + a.File
		}
		fmt.Fprintf(&b, "    %-18s %s\n    %-18s %s\n", a.Name, what, "", a.About)
	}
	return b.String()
}

func newPullCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "pull NAME...",
		Short: "Download models from the Hugging Face Hub (into its shared cache) or CivitAI",
		Long: `Download models from the Hugging Face Hub (or the mirror HF_ENDPOINT names)
into the Hugging Face cache that diffusers and huggingface_hub use, so what
they downloaded is not fetched again and what darkroom pulls they see.
Afterwards the same NAME works with gen -m.

NAME is one of:
  org/name                 a diffusers pipeline: model_index.json, the
                           components' configs and tokenizers and their
                           .safetensors weights (plain rather than fp16
                           variants; no .bin, .ckpt, onnx or flax files)
  org/name/path/in/repo    one file of a repository
  civitai:VERSION_ID       a CivitAI checkpoint or VAE (the modelVersionId
                           of its page), into ` + engine.DefaultModelDir() + `
  an alias                 a short name for a common model:
` + aliasTable() + `
Downloads resume where an interrupted one stopped, and are checked against
the sha256 the hub (or CivitAI) gives. Gated models (accept their terms on huggingface.co first)
need a token: HF_TOKEN, or the file 'hf auth login' writes.

Environment: HF_HUB_CACHE (the cache; default $HF_HOME/hub, HF_HOME
default ~/.cache/huggingface), HF_TOKEN, HF_ENDPOINT; CIVITAI_TOKEN (an API
key, for CivitAI models that need a login).`,
		Example: `  darkroom pull sd15
  darkroom gen -m sd15 -p "a lighthouse at dusk"
  darkroom pull stable-diffusion-v1-5/stable-diffusion-v1-5
  darkroom pull madebyollin/taesd/taesd_decoder.safetensors
  darkroom pull civitai:123456     # the modelVersionId in the page URL
  HF_TOKEN=hf_... darkroom pull some-org/a-gated-model`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("%s needs at least one NAME (see '%s --help')", cmd.CommandPath(), cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range args {
				bar := newPullBar(cmd.ErrOrStderr())
				res, err := engine.Pull(cmd.Context(), name, bar.event)
				bar.end()
				if err != nil {
					return err
				}
				if res.Commit != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: %s (commit %.12s)\n", name, res.Path, res.Commit)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", name, res.Path)
				}
			}
			return nil
		},
	}
}

// pullBar draws download progress: a bar redrawn in place on a terminal,
// else lines: when a large (or resumed) file starts, every 10% of a large
// one, and when each file is done.
type pullBar struct {
	w        io.Writer
	tty      bool
	file     string
	start    time.Time
	from     int64 // bytes present when the file started (a resumed download)
	lastDraw time.Time
	lastTens int64
	drawn    bool
	fetched  map[string]bool // files downloaded in this pull
}

func newPullBar(w io.Writer) *pullBar {
	b := &pullBar{w: w, fetched: map[string]bool{}}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		b.tty = true
	}
	return b
}

func (b *pullBar) event(p engine.PullProgress) {
	label := p.File
	if p.Count > 0 {
		label = fmt.Sprintf("[%d/%d] %s", p.Index, p.Count, p.File)
	}
	if p.Cached {
		if p.Count > 0 && !b.fetched[p.File] {
			b.line(label + ": in the cache")
		}
		return
	}
	now := time.Now()
	if p.File != b.file {
		b.file, b.start, b.from, b.lastTens = p.File, now, p.Done, 0
		if p.Total > 0 {
			b.lastTens = p.Done * 10 / p.Total
		}
		if !b.tty && (p.Total >= 64<<20 || p.Done > 0) { // small files get one line, when done
			msg := label + ": " + humanBytes(p.Total)
			if p.Done > 0 {
				msg += ", resuming at " + humanBytes(p.Done)
			}
			b.line(msg)
		}
	}
	rate := float64(p.Done-b.from) / max(now.Sub(b.start).Seconds(), 1e-3)
	if p.Finished {
		b.fetched[p.File] = true
		b.line(fmt.Sprintf("%s: done, %s in %.1fs (%s/s)", label, humanBytes(p.Total), now.Sub(b.start).Seconds(), humanBytes(int64(rate))))
		b.file = ""
		return
	}
	if !b.tty {
		if p.Total >= 64<<20 {
			if tens := p.Done * 10 / p.Total; tens > b.lastTens && tens < 10 {
				b.lastTens = tens
				b.line(fmt.Sprintf("%s: %d%% (%s/s)", label, tens*10, humanBytes(int64(rate))))
			}
		}
		return
	}
	if now.Sub(b.lastDraw) < 100*time.Millisecond {
		return
	}
	b.lastDraw = now
	const width = 24
	frac := 0.0
	if p.Total > 0 {
		frac = float64(p.Done) / float64(p.Total)
	}
	n := int(frac * width)
	fmt.Fprintf(b.w, "\r\x1b[K%s [%s%s] %3.0f%% %s/%s %s/s", label, strings.Repeat("=", n), strings.Repeat(" ", width-n),
		frac*100, humanBytes(p.Done), humanBytes(p.Total), humanBytes(int64(rate)))
	b.drawn = true
}

// line prints a whole line, over the bar on a terminal.
func (b *pullBar) line(s string) {
	if b.drawn {
		fmt.Fprint(b.w, "\r\x1b[K")
		b.drawn = false
	}
	fmt.Fprintln(b.w, s)
}

// end clears a bar left drawn (an interrupted or failed download).
func (b *pullBar) end() {
	if b.drawn {
		fmt.Fprintln(b.w)
		b.drawn = false
	}
}

func newLsCmd() *cobra.Command {
	var models []string
	c := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the local models: built-in, model directories, Hugging Face cache",
		Long: `List the models gen -m takes by name: the built-in model, the .safetensors
files and diffusers folders of the model directories (--models), and the
Hugging Face cache (` + engine.HubCacheDir() + `): each diffusers pipeline
and each .safetensors file outside a pipeline's folders, whoever downloaded
them (darkroom pull, diffusers, huggingface-cli, ComfyUI-Manager). ALIAS is
the darkroom pull alias that names the same model.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			eng, err := engine.Open(engine.Options{Device: "cpu", ModelDirs: models})
			if err != nil {
				return err
			}
			defer eng.Close()
			return runLs(cmd.OutOrStdout(), eng)
		},
	}
	c.Flags().StringSliceVar(&models, "models", nil, "model directories (default "+engine.DefaultModelDir()+"; ComfyUI / A1111 / SwarmUI roots work)")
	return c
}

func runLs(w io.Writer, eng *engine.Engine) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tALIAS\tSIZE\tPATH")
	size := func(n int64) string {
		if n <= 0 {
			return "-"
		}
		return humanBytes(n)
	}
	// ListModels holds the Hugging Face cache's models too; ListHub adds
	// their aliases.
	alias := map[string]string{}
	for _, h := range engine.ListHub() {
		alias[h.Path] = h.Alias
	}
	for _, m := range eng.ListModels() {
		path := m.Path
		if path == engine.DefaultModel {
			path = "(built into the binary)"
		}
		note := ""
		if m.Broken != "" {
			note = "  (broken: " + m.Broken + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s%s\n", m.Name, alias[m.Path], size(m.Size), path, note)
	}
	return tw.Flush()
}
