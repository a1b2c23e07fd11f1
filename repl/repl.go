// Package repl is darkroom's notebook REPL (`darkroom repl`): Go cells
// interpreted by package script, with state kept across cells, inline
// images, history across sessions, and Ctrl-C that interrupts the running
// cell but keeps the session.
package repl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/script"
	"github.com/darkroom-ai/darkroom/script/dr"
)

// Options configure Run. The zero value reads os.Stdin, writes os.Stdout
// and os.Stderr, opens a default engine and keeps history in
// DefaultHistoryFile().
type Options struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Engine is shared with the session (eng); nil opens one with
	// EngineOptions.
	Engine        *engine.Engine
	EngineOptions engine.Options
	// HistoryFile keeps entered lines across sessions; "" selects
	// DefaultHistoryFile() and "-" keeps no history.
	HistoryFile string
	// Graphics selects how show(img) draws: "auto" (default: detect the
	// terminal, as the TUI does), "kitty", "sixel", "iterm", "halfblock" or
	// "none" (print the image size only). When standard output is not a
	// terminal, "auto" means "none".
	Graphics string
	// ImageCols and ImageRows bound an inline image in terminal cells
	// (default 32×16, and never more than the terminal).
	ImageCols, ImageRows int
	// Load is a script to :load before the first prompt, if set.
	Load string
	// Generate, when set, runs the jobs of generate and dr.Generate
	// (`darkroom repl --server`: on a server); nil runs them on the
	// engine. eng stays the engine.
	Generate func(ctx context.Context, req engine.Request, onEvent func(engine.Event)) (*engine.Result, error)
	// Connect opens a server's client for dr.Server (nil: dr.Server
	// fails).
	Connect func(url, token string) (dr.Remote, error)

	// cellContext makes the context of one cell; nil uses
	// signal.NotifyContext(parent, os.Interrupt). Tests replace it.
	cellContext func(parent context.Context) (context.Context, context.CancelFunc)
}

// DefaultHistoryFile is $XDG_STATE_HOME/darkroom/repl_history, or
// ~/.local/state/darkroom/repl_history.
func DefaultHistoryFile() string {
	if x := os.Getenv("XDG_STATE_HOME"); x != "" {
		return filepath.Join(x, "darkroom", "repl_history")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".local", "state", "darkroom", "repl_history")
}

const banner = `darkroom repl — Go cells run by Yaegi. :help for help, Ctrl-D to quit.
eng (engine), ctx (Ctrl-C cancels it), show(img), progress, check(err), generate are ready.`

// Run runs a REPL session until end of input, :quit or ctx is cancelled.
func Run(ctx context.Context, opts Options) error {
	if opts.Stdin == nil {
		opts.Stdin = os.Stdin
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.cellContext == nil {
		opts.cellContext = func(parent context.Context) (context.Context, context.CancelFunc) {
			return signal.NotifyContext(parent, os.Interrupt)
		}
	}
	histPath := opts.HistoryFile
	if histPath == "" {
		histPath = DefaultHistoryFile()
	}
	if histPath == "-" {
		histPath = ""
	}
	hist := loadHistory(histPath)

	lr, tty := newLineReader(opts.Stdin, opts.Stdout, hist)
	defer lr.Close()
	s := &session{opts: opts, out: opts.Stdout, errw: opts.Stderr, lines: lr, hist: hist, tty: tty}
	s.display = newDisplay(opts, tty)
	it, err := script.New(script.Options{
		Stdout: opts.Stdout, Stderr: opts.Stderr,
		Engine: opts.Engine, EngineOptions: opts.EngineOptions,
		Show: s.show, Generate: opts.Generate, Connect: opts.Connect,
	})
	if err != nil {
		return err
	}
	s.it = it
	if err := it.LoadPrelude(ctx); err != nil {
		return err
	}
	if tty {
		fmt.Fprintln(s.out, banner)
	}
	if opts.Load != "" {
		s.command(ctx, ":load "+opts.Load)
	}
	return s.loop(ctx)
}

type session struct {
	opts    Options
	it      *script.Interpreter
	out     io.Writer
	errw    io.Writer
	lines   lineReader
	hist    *history
	display display
	tty     bool
}

// errQuit ends the loop from :quit.
var errQuit = errors.New("quit")

func (s *session) loop(ctx context.Context) error {
	for {
		if ctx.Err() != nil {
			return nil
		}
		cell, err := s.readCell()
		switch {
		case errors.Is(err, io.EOF):
			if s.tty {
				fmt.Fprintln(s.out) // leave the shell prompt on its own line
			}
			return nil
		case errors.Is(err, errCancelled):
			fmt.Fprintln(s.out, "^C")
			continue
		case err != nil:
			return fmt.Errorf("read input: %w", err)
		}
		if strings.TrimSpace(cell) == "" {
			continue
		}
		if t := strings.TrimSpace(cell); strings.HasPrefix(t, ":") {
			if err := s.command(ctx, t); errors.Is(err, errQuit) {
				return nil
			}
			continue
		}
		s.eval(ctx, cell)
	}
}

// readCell reads lines until they form a complete cell.
func (s *session) readCell() (string, error) {
	var lines []string
	prompt := ">>> "
	for {
		line, err := s.lines.ReadLine(prompt)
		if err != nil {
			if errors.Is(err, io.EOF) && len(lines) > 0 {
				// End of input in the middle of a cell: run what there is.
				return strings.Join(lines, "\n"), nil
			}
			return "", err
		}
		s.hist.Add(line)
		if len(lines) == 0 && strings.HasPrefix(strings.TrimSpace(line), ":") {
			return line, nil
		}
		lines = append(lines, line)
		cell := strings.Join(lines, "\n")
		if !script.Incomplete(cell) {
			return cell, nil
		}
		prompt = "... "
	}
}

// eval runs one cell with a context that Ctrl-C cancels.
func (s *session) eval(ctx context.Context, cell string) {
	cctx, cancel := s.opts.cellContext(ctx)
	t0 := time.Now()
	out, err := s.it.Eval(cctx, cell)
	interrupted := cctx.Err() != nil && ctx.Err() == nil
	cancel()
	if out != "" {
		fmt.Fprintln(s.out, out)
	}
	switch {
	case err == nil:
	case interrupted || errors.Is(err, script.ErrInterrupted):
		fmt.Fprintf(s.errw, "interrupted after %.1fs; the session keeps its state\n", time.Since(t0).Seconds())
	default:
		fmt.Fprintln(s.errw, "error:", err)
	}
}

func (s *session) show(img image.Image) { showImage(s.out, s.display, img) }

func showImage(out io.Writer, d display, img image.Image) {
	if img == nil || img.Bounds().Empty() {
		fmt.Fprintln(out, "[no image]")
		return
	}
	b := img.Bounds()
	if text := d.render(img); text != "" {
		fmt.Fprintln(out, text)
	}
	fmt.Fprintf(out, "[image %dx%d]\n", b.Dx(), b.Dy())
}

// ShowFunc returns the REPL's image display for other frontends, such as
// `darkroom run` (script.Options.Show): images are drawn inline on out
// when it is a terminal (per graphics, as Options.Graphics), followed by
// an "[image WxH]" line.
func ShowFunc(out io.Writer, graphics string) func(image.Image) {
	f, ok := out.(*os.File)
	tty := ok && term.IsTerminal(int(f.Fd()))
	d := newDisplay(Options{Stdout: out, Graphics: graphics}, tty)
	return func(img image.Image) { showImage(out, d, img) }
}

const help = `Cells are Go statements and declarations; state persists across cells.
An unfinished cell (open brace, bracket or parenthesis) continues on the
next line. The value of a final expression is printed; an image is shown.

Ready in every session:
  eng        *engine.Engine   eng.Load(ctx, "name or path"), eng.ListModels(), eng.Devices()
  ctx        context.Context  cancelled by Ctrl-C while a cell runs
  show(img)                   draw an image inline
  progress                    per-step printer: m.Generate(ctx, req, progress)
  check(err)                  stop the cell if err is not nil
  generate(ctx, req, onEvent) run a request as a job of the session (eng.Generate;
                              on the server with darkroom repl --server)
  dr.Server(url, token)       a darkroom server's client: srv.Generate(ctx, req, progress)
  packages: context fmt image math os strings time engine grid rng sampling dr

Commands:
  :help        this help
  :vars        list the session's variables
  :save FILE   write the successful cells as a recipe (darkroom run FILE);
               cells using what a failed cell left are left out
  :load FILE   run a recipe or script in this session
  :quit        leave (also Ctrl-D)

Ctrl-C interrupts a running cell (a generation stops within one step);
at the prompt it discards the current input.

Yaegi (the interpreter) lacks a few recent Go features: range over an
integer or a function and per-iteration loop variables (copy them:
i := i); min, max and clear are rewritten (not in a for condition).
See docs/scripting.md.`

// command runs a :command.
func (s *session) command(ctx context.Context, line string) error {
	name, arg, _ := strings.Cut(strings.TrimPrefix(line, ":"), " ")
	arg = strings.TrimSpace(arg)
	switch name {
	case "help", "h", "?":
		fmt.Fprintln(s.out, help)
	case "quit", "q", "exit":
		return errQuit
	case "vars":
		vars := s.it.Vars()
		w := 0
		for _, v := range vars {
			w = max(w, len(v.Name))
		}
		for _, v := range vars {
			fmt.Fprintf(s.out, "%-*s  %s = %s\n", w, v.Name, v.Type, v.Value)
		}
	case "save":
		if arg == "" {
			fmt.Fprintln(s.errw, "error: usage: :save FILE")
			return nil
		}
		src, err := s.it.Recipe(fmt.Sprintf("Recipe saved from a darkroom repl session on %s.\nRun it with: darkroom run %s", time.Now().Format("2006-01-02"), filepath.Base(arg)))
		if err == nil {
			err = os.WriteFile(arg, src, 0o644)
		}
		if err != nil {
			fmt.Fprintln(s.errw, "error: save:", err)
			return nil
		}
		fmt.Fprintf(s.out, "saved %d cells to %s\n", s.it.Cells(), arg)
		if n := s.it.Left(); n > 0 {
			fmt.Fprintf(s.out, "left out %d cells that use what a failed or interrupted cell defined or changed\n", n)
		}
	case "load":
		if arg == "" {
			fmt.Fprintln(s.errw, "error: usage: :load FILE")
			return nil
		}
		cctx, cancel := s.opts.cellContext(ctx)
		n, err := s.it.LoadFile(cctx, arg)
		cancel()
		if err != nil {
			fmt.Fprintln(s.errw, "error:", err)
			return nil
		}
		fmt.Fprintf(s.out, "loaded %s (%d cells)\n", arg, n)
	default:
		fmt.Fprintf(s.errw, "error: unknown command :%s (try :help)\n", name)
	}
	return nil
}

// history keeps entered lines, appended to a file across sessions.
type history struct {
	path  string
	lines []string
}

const historyMax = 1000

func loadHistory(path string) *history {
	h := &history{path: path}
	if path == "" {
		return h
	}
	f, err := os.Open(path)
	if err != nil {
		return h
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		h.lines = append(h.lines, sc.Text())
	}
	if len(h.lines) > historyMax {
		h.lines = h.lines[len(h.lines)-historyMax:]
	}
	return h
}

// Add records a line (blank lines and repeats of the last line are
// skipped) and appends it to the history file; file errors are ignored,
// history is a convenience.
func (h *history) Add(line string) {
	if strings.TrimSpace(line) == "" || len(h.lines) > 0 && h.lines[len(h.lines)-1] == line {
		return
	}
	h.lines = append(h.lines, line)
	if h.path == "" {
		return
	}
	if err := os.MkdirAll(filepath.Dir(h.path), 0o755); err != nil {
		return
	}
	f, err := os.OpenFile(h.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	fmt.Fprintln(f, line)
	f.Close()
}

// Len and At let x/term's line editor browse the history (At(0) is the
// most recent line).
func (h *history) Len() int { return len(h.lines) }

// At returns the idx-th most recent line.
func (h *history) At(idx int) string { return h.lines[len(h.lines)-1-idx] }
