package tui

import (
	"context"
	"fmt"
	"image"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	uv "github.com/charmbracelet/ultraviolet"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/script/dr"
	"github.com/darkroom-ai/darkroom/termimg"
)

// pane identifies a focusable pane.
type pane int

const (
	panePrompt pane = iota
	paneQueue
	paneHistory
)

// overlayKind is the modal drawn over the panes, if any.
type overlayKind int

const (
	overlayNone overlayKind = iota
	overlayHelp
	overlayPicker
	overlayQuit
)

// requestCellSize asks the terminal for its cell size in pixels (CSI 16 t;
// the reply arrives as uv.CellSizeEvent).
const requestCellSize = "\x1b[16t"

// Terminal sizes: from fullWidth×fullHeight up the screen has its full
// layout; below it a compact one (a one-row prompt text area, and below
// hintsHeight rows no key hints); below minWidth×minHeight it says the
// terminal is too small.
const (
	minWidth    = 60
	minHeight   = 18
	hintsHeight = 20
	fullWidth   = 80
	fullHeight  = 24
)

// modelsMsg carries the models found in the model directories.
type modelsMsg struct {
	Models []engine.ModelEntry
	Dirs   []string
}

// appConfig is what New needs besides the pipeline.
type appConfig struct {
	Model string
	Mode  termimg.Mode // resolved; ModeHalfblock may be upgraded by DA1
	Auto  bool         // graphics were auto-detected
	Tmux  bool
	GPU   GPUStatsProvider
	// Remote is the server's queue when the jobs run on a server (nil
	// otherwise).
	Remote RemoteQueue
	Notice string
	// CellW and CellH are the cell size in pixels if known (0 otherwise).
	CellW, CellH int
	Now          func() time.Time
	RandSeed     func() uint64
	// Engine is the engine behind the pipeline, if it is one: the `:`
	// command line's scripts get it as eng.
	Engine *engine.Engine
	// Connect is dr.Server for the `:` command line (nil: it fails).
	Connect func(url, token string) (dr.Remote, error)
}

// App is the root model: it owns focus, layout, the job list and the
// running job; the panes render and edit their own parts.
type App struct {
	c        *Common
	ctx      context.Context
	pipeline Pipeline
	submit   func(workItem) tea.Cmd
	host     *hostSampler
	cfg      appConfig

	prompt  *PromptPane
	queue   *QueuePane
	history *HistoryPane
	devices *DevicesPane
	preview *PreviewPane
	script  *ScriptLine
	sess    *scriptSession // the `:` line's interpreter, once used

	focus   pane
	tab     pane // queue or history, shown in the lower left box
	overlay overlayKind
	pickSel int

	models       []engine.ModelEntry
	modelDirs    []string
	modelsLoaded bool

	// remote is the server's queue, without the TUI's own job, as last
	// read (remoteValid), or why it could not be.
	remote      []RemoteJob
	remoteErr   error
	remoteValid bool

	jobs      []*Job // queue order, finished jobs included
	done      []*Job // finished images, newest first
	running   *Job
	nextID    int
	lastImage *image.NRGBA
	// shown is the image a script showed last, until a job finishes.
	shown *image.NRGBA

	logMsg string
	logErr bool

	gfxKey string
	gfxSeq int
}

// newApp builds the root model. submit hands a job to the worker.
func newApp(ctx context.Context, p Pipeline, submit func(workItem) tea.Cmd, cfg appConfig) *App {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RandSeed == nil {
		cfg.RandSeed = func() uint64 { return rand.Uint64() >> 1 }
	}
	c := &Common{Styles: DefaultStyles(true), Keys: DefaultKeyMap(), Width: fullWidth, Height: fullHeight}
	a := &App{
		c: c, ctx: ctx, pipeline: p, submit: submit, host: newHostSampler(), cfg: cfg,
		prompt:  NewPromptPane(c),
		queue:   NewQueuePane(c),
		history: NewHistoryPane(c),
		devices: NewDevicesPane(c),
		preview: NewPreviewPane(c, cfg.Mode, cfg.Tmux),
		script:  NewScriptLine(c),
		tab:     paneQueue,
		nextID:  1,
	}
	a.preview.SetCellSize(cfg.CellW, cfg.CellH)
	a.prompt.SetModel(cfg.Model)
	a.prompt.Focus(fieldPrompt)
	a.logMsg = "Welcome to darkroom. Write a prompt and press ctrl+g to enqueue; ? or f1 for help."
	if cfg.Notice != "" {
		a.logMsg = cfg.Notice
	}
	a.layout()
	return a
}

// Init lists the models, starts the devices sampler (and, attached to a
// server, the reading of its queue) and asks the terminal
// for its background colour (and, for auto graphics, its device
// attributes, to find sixel).
func (a *App) Init() tea.Cmd {
	cmds := []tea.Cmd{a.listModels(), sampleDevices(a.host, a.cfg.GPU, 0), tea.RequestBackgroundColor}
	if a.cfg.Remote != nil {
		cmds = append(cmds, pollRemote(a.cfg.Remote, 0))
	}
	if a.cfg.Auto && a.cfg.Mode == termimg.ModeHalfblock && !a.cfg.Tmux {
		cmds = append(cmds, tea.Raw(termimg.RequestDA1))
	}
	if a.cfg.Mode != termimg.ModeHalfblock && a.cfg.Mode != termimg.ModeNone || a.cfg.Auto {
		cmds = append(cmds, tea.Raw(requestCellSize))
	}
	return tea.Batch(cmds...)
}

// listModels lists the models off the UI goroutine.
func (a *App) listModels() tea.Cmd {
	p := a.pipeline
	return func() tea.Msg { return modelsMsg{Models: p.ListModels(), Dirs: p.ModelDirs()} }
}

// Update handles a message, then schedules pixel graphics if the preview
// changed.
func (a *App) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	cmd := a.update(msg)
	if g := a.graphicsCmd(); g != nil {
		cmd = tea.Batch(cmd, g)
	}
	return a, cmd
}

func (a *App) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		a.c.Width, a.c.Height = msg.Width, msg.Height
		a.layout()
	case tea.BackgroundColorMsg:
		a.c.Styles = DefaultStyles(msg.IsDark())
		a.preview.cacheImg = nil
	case uv.CellSizeEvent:
		a.preview.SetCellSize(msg.Width, msg.Height)
	case uv.PrimaryDeviceAttributesEvent:
		if a.cfg.Auto && a.preview.Mode() == termimg.ModeHalfblock && termimg.HasSixel(msg) {
			a.preview.SetMode(termimg.ModeSixel)
		}
	case tea.KeyPressMsg:
		return a.handleKey(msg)
	case tea.MouseClickMsg:
		return a.handleMouse(msg.Mouse(), false)
	case tea.MouseWheelMsg:
		return a.handleMouse(msg.Mouse(), true)
	case tea.PasteMsg:
		if a.overlay == overlayNone && a.script.open {
			a.script.edit.Update(msg, a.c.Width)
		} else if a.overlay == overlayNone && a.focus == panePrompt {
			return a.prompt.Update(msg)
		}
	case modelsMsg:
		a.setModels(msg)
	case devicesMsg:
		a.devices.Set(msg)
		return sampleDevices(a.host, a.cfg.GPU, devicesInterval)
	case remoteMsg:
		a.setRemote(msg)
		return pollRemote(a.cfg.Remote, remoteInterval)
	case jobProgressMsg:
		a.onProgress(msg)
	case jobDoneMsg:
		return a.onDone(msg)
	case scriptDoneMsg:
		a.onScriptDone(msg)
	case scriptOutMsg:
		a.script.add(a.sess.drain(), lineOutput)
		return a.sess.listen()
	case scriptJobMsg:
		return tea.Batch(a.onScriptJob(msg.Job), a.sess.listen())
	case scriptShowMsg:
		a.shown = msg.Img
		close(msg.Shown)
		return a.sess.listen()
	case gfxReadyMsg:
		if msg.Seq == a.gfxSeq && msg.Out != "" && a.overlay == overlayNone {
			return tea.Raw(msg.Out)
		}
	}
	return nil
}

// setModels stores the model list and, unless a model was given,
// selects the first of the user's models that is not broken, or the
// engine's built-in one (saying where models were looked for, and how
// many files were broken) when there is none.
func (a *App) setModels(m modelsMsg) {
	a.models, a.modelDirs, a.modelsLoaded = m.Models, m.Dirs, true
	var user []engine.ModelEntry
	broken := 0
	for _, e := range m.Models {
		switch {
		case e.Broken != "":
			broken++
		case e.Name != engine.DefaultModel:
			user = append(user, e)
		}
	}
	dirs := strings.Join(m.Dirs, ", ")
	brokenNote := ""
	if broken > 0 {
		brokenNote = fmt.Sprintf(" %d broken (ctrl+o says why).", broken)
	}
	builtin := slices.IndexFunc(m.Models, func(e engine.ModelEntry) bool { return e.Name == engine.DefaultModel && e.Broken == "" })
	switch {
	case a.prompt.Model() != "":
	case len(user) == 0 && builtin < 0:
		a.setLog(true, "No model found in %s. Put .safetensors files there or run darkroom --models DIR.%s", dirs, brokenNote)
	case len(user) == 0:
		a.prompt.SetModel(m.Models[builtin].Name)
		a.setLog(true, "No model found in %s (run darkroom --models DIR); using the built-in %s.%s", dirs, m.Models[builtin].Name, brokenNote)
	default:
		a.prompt.SetModel(user[0].Name)
		if len(m.Models) > 1 {
			a.setLog(broken > 0, "%d models found; using %s (ctrl+o picks another).%s", len(m.Models)-broken, user[0].Name, brokenNote)
		}
	}
}

// setLog sets the log line.
func (a *App) setLog(isErr bool, format string, args ...any) {
	a.logMsg, a.logErr = fmt.Sprintf(format, args...), isErr
}

// inFlight counts queued and running jobs.
func (a *App) inFlight() int {
	n := 0
	for _, j := range a.jobs {
		if j.State == JobQueued || j.State == JobRunning {
			n++
		}
	}
	return n
}

// graphicsCmd schedules drawing the preview with pixel graphics when what
// it shows, or where, changed.
func (a *App) graphicsCmd() tea.Cmd {
	m := a.preview.Mode()
	if m != termimg.ModeSixel && m != termimg.ModeITerm && m != termimg.ModeKitty {
		return nil
	}
	img, x, y, w, h := a.previewTarget()
	key := fmt.Sprintf("%p %d %d %d %d %d %d %d %d", img, x, y, w, h, a.overlay, m, a.preview.cellW, a.preview.cellH)
	if key == a.gfxKey {
		return nil
	}
	a.gfxKey = key
	a.gfxSeq++
	if a.overlay != overlayNone {
		return nil
	}
	if img == nil {
		if s := a.preview.Erase(x, y, w, h); s != "" {
			return tea.Raw(s)
		}
		return nil
	}
	// Kitty uploads need no blank frame first; sixel and iTerm2 images wait
	// until the renderer has drawn the blank cells they cover.
	delay := gfxDelay
	if m == termimg.ModeKitty {
		delay = 0
	}
	return a.preview.encodeCmd(a.gfxSeq, img, x, y, w, h, delay)
}
