package cmd

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/engine/demo"
)

const genLong = `Generate images from a text prompt (text-to-image).

Without -m/--model, darkroom uses its built-in model, darkroom-digits: a tiny
SD1-architecture model trained on handwritten digits ("a handwritten digit 7",
"the number 3"). It makes 32×32 images, so its defaults are -W 32 -H 32
--steps 20 --cfg 5, and the PNG is enlarged 8× with nearest-neighbour
sampling for viewing (--view-scale 1 writes the 32×32 original).

The same seed, prompt and settings give the same image as ComfyUI and
diffusers: the initial noise is drawn exactly as torch.randn does on the CPU,
and samplers and schedulers follow ComfyUI's definitions (the SDE samplers
draw their Brownian noise differently; see docs/sampling.md).

Prompts follow ComfyUI's syntax: "(text:1.3)" sets the weight of text,
"(text)" multiplies it by 1.1, \( and \) are literal parentheses. Prompts
longer than 75 tokens are split into windows of 75 tokens, each encoded
separately and concatenated, as ComfyUI does (no truncation).

Every PNG carries an A1111-style "parameters" text chunk (read by A1111,
civitai and image browsers) and a "darkroom" chunk holding the exact request;
'darkroom gen --from image.png' regenerates the image bit for bit. --from also
reads PNGs of A1111 (and its forks: their "parameters" text) and ComfyUI (the
KSampler, prompts, empty latent and checkpoint of its "prompt" graph), and
says on stderr which fields it took and what it ignored.

The prompt may be given as the argument instead of -p: darkroom gen "a cat".
Sampler and scheduler names may be spelled as A1111 and stable-diffusion.cpp
spell them ("Euler a", "DPM++ 2M Karras", dpm++2m, Karras).

Without -o, existing files are never overwritten: out.png, then out-1.png,
out-2.png, ... (the first free). A file named with -o is overwritten, and
stderr says so. Off a terminal, progress is one line per step (per 10% past
20 steps) with the rate.`

const genExample = `  darkroom gen "a handwritten digit 7" -o seven.png         # built-in model
  darkroom gen -p "a handwritten digit 7" -o seven.png      # the same
  darkroom gen -m ~/models/v1-5-pruned-emaonly.safetensors \
      -p "a lighthouse at dusk, watercolor" -n "blurry" -s 42 -o lighthouse.png
  darkroom gen -m sd15 -p "a cat" --sampler dpmpp_2m --scheduler karras --steps 25 -b 4 -o cats.png
  darkroom gen --from lighthouse.png -o again.png
  darkroom gen -m sd15 --lora style.safetensors:0.8 --lora detail:1:0.5 -p "a cat" -o cat.png
  darkroom gen -m sd15 -p "a cat <lora:style:0.8>" --lora-dir ~/loras -o cat.png
  darkroom gen -m sd15 -p "a cat, embedding:my-style" --embedding-dir ~/embeddings -o cat.png     # textual inversion
  darkroom gen -m sd_xl_base_1.0.safetensors --refiner sd_xl_refiner_1.0.safetensors -p "a fox" -o fox.png
  darkroom gen -m sd15 --init-image photo.png --denoise 0.5 -p "an oil painting" -o painted.png      # img2img
  darkroom gen -m sd15 --init-image photo.png --mask mask.png --mask-blur 4 -p "a red door" -o door.png  # inpaint
  darkroom gen -m sd15 --init-image photo.png --outpaint 0,0,256,0 -p "a wide beach" -o wider.png      # outpaint
  darkroom gen -m sd15 -p "a castle" --hires 2 --hires-denoise 0.5 --hires-upscaler latent-bislerp -o castle.png
  darkroom gen -m sd15 -p "a castle" -s 42 --variation-seed 7 --variation-strength 0.2 -o castle-v.png
  darkroom gen -m flux1-dev.safetensors --vae ae.safetensors --text-encoder clip_l.safetensors \
      --text-encoder t5xxl_fp8_e4m3fn.safetensors -p "a neon sign that says darkroom" --guidance 3.5 -o sign.png
  darkroom gen -m flux1-schnell.safetensors --vae ae.safetensors --text-encoder clip_l.safetensors \
      --text-encoder t5xxl_fp16.safetensors -p "a fox in the snow" -o fox.png        # 4 steps`

type genFlags struct {
	models    []string
	loraDirs  []string
	embDirs   []string
	req       engine.Request // the request fields' flags
	seed      string         // --seed as given: "" and -1 draw a random seed
	output    string
	device    string
	precision string
	from      string
	viewScale int
	// fromFields are the request fields --from's PNG set (all of them
	// for darkroom's own PNGs).
	fromFields map[string]bool
}

func newGenCmd() *cobra.Command {
	c, _ := newGenCmdFlags()
	return c
}

// newGenCmdFlags returns the gen command and the flags it parses into.
func newGenCmdFlags() (*cobra.Command, *genFlags) {
	f := &genFlags{req: engine.DefaultRequest()}
	c := &cobra.Command{
		Use:     "gen [PROMPT]",
		Short:   "Generate images from a prompt",
		Long:    genLong,
		Example: genExample,
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withFlagNames(runGen(cmd, f))
		},
	}
	fl := c.Flags()
	// One flag per request field, from the engine's field table.
	for _, field := range engine.RequestFields() {
		if field.Flag == "" {
			continue
		}
		var v pflag.Value = &fieldValue{field: field, req: &f.req}
		if field.Name == "seed" {
			v = &seedValue{&f.seed} // parsed when the command runs: -1 is random
		}
		fl.VarP(v, field.Flag, field.Short, field.Usage)
		if field.Kind == engine.KindBool {
			fl.Lookup(field.Flag).NoOptDefVal = "true" // --zsnr alone means true
		}
		if field.Values != nil {
			_ = c.RegisterFlagCompletionFunc(field.Flag, fixedCompletion(field.Values))
		}
	}
	fl.StringVarP(&f.output, "output", "o", "out.png", "output PNG (.png is added to a name without one); a batch is numbered NAME-1.png, NAME-2.png, .... Given, the files are overwritten (and stderr says so); without -o existing files are kept and the first free of out.png, out-1.png, out-2.png, ... is taken")
	fl.StringVar(&f.device, "device", "auto", "compute device: auto, cpu or cuda")
	fl.StringVar(&f.precision, "precision", "auto", "GPU precision: auto (fp16), fp16, bf16 or fp32 (parity mode); the CPU always computes in float32")
	fl.StringSliceVar(&f.models, "models", nil, "model directories searched for -m NAME (default "+engine.DefaultModelDir()+"; ComfyUI / A1111 / SwarmUI roots work)")
	fl.StringSliceVar(&f.loraDirs, "lora-dir", nil, "folders searched first for --lora NAME and <lora:NAME:W> (then each model directory's loras/ and Lora/)")
	fl.StringSliceVar(&f.embDirs, "embedding-dir", nil, "folders searched first for embedding:NAME in prompts (textual inversion; then each model directory's embeddings/ and models/embeddings/)")
	fl.StringVar(&f.from, "from", "", "regenerate from the parameters stored in a PNG made by darkroom, A1111 (and forks) or ComfyUI (flags given explicitly override them)")
	fl.IntVar(&f.viewScale, "view-scale", 0, "enlarge the written PNG N× (1 to 64) with nearest-neighbour sampling (default 8 for the built-in model, else 1)")
	_ = c.RegisterFlagCompletionFunc("device", fixedCompletion([]string{"auto", "cpu", "cuda"}))
	return c, f
}

// fieldValue is the flag of a request field: it parses into req through
// the field's Set.
type fieldValue struct {
	field engine.RequestField
	req   *engine.Request
	raw   string // the text last given
}

func (v *fieldValue) String() string { return v.field.String(v.req) }

func (v *fieldValue) Set(s string) error {
	v.raw = s
	err := v.field.Set(v.req, s)
	var fe *engine.FieldError
	if errors.As(err, &fe) {
		// pflag's message already names the flag and quotes s.
		return errors.New(fe.Msg)
	}
	return err
}

// Type names the value in the help, as pflag's own flags of the kind do.
func (v *fieldValue) Type() string {
	switch v.field.Kind {
	case engine.KindInt:
		return "int"
	case engine.KindUint:
		return "uint"
	case engine.KindFloat:
		return "float64"
	case engine.KindBool:
		return "bool"
	case engine.KindStrings:
		return "stringArray" // repeatable, each use one value
	}
	return "string"
}

// seedValue keeps --seed as text: "" and -1 mean a random seed.
type seedValue struct{ s *string }

func (v *seedValue) String() string     { return *v.s }
func (v *seedValue) Set(s string) error { *v.s = s; return nil }
func (v *seedValue) Type() string       { return "string" }

func fixedCompletion(values []string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// parseSeed parses --seed or draws a random one.
func parseSeed(s string) (uint64, error) {
	if s == "" || s == "-1" { // -1: random, as in A1111 and stable-diffusion.cpp
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("draw a random seed: %w", err)
		}
		// Keep random seeds within 2^53 so every tool that stores seeds as
		// float64 (JSON in JavaScript UIs) keeps them exact.
		return binary.LittleEndian.Uint64(b[:]) >> 11, nil
	}
	seed, _ := engine.FieldByName("seed")
	var req engine.Request
	if err := seed.Set(&req, s); err != nil {
		return 0, err // a FieldError, shown as --seed "s": ...
	}
	return req.Seed, nil
}

// outputPaths returns the PNG paths for a batch: the name -o gives, with
// .png added when it has no extension, and for a batch NAME-1.png,
// NAME-2.png, .... When -o was not given (explicit false), existing files
// are kept: a batch of one takes NAME.png when it is free, and otherwise
// (and a batch always) the first free names among NAME-1.png, NAME-2.png,
// ..., as A1111 and ComfyUI number their outputs.
func outputPaths(output string, batch int, explicit bool) []string {
	ext := filepath.Ext(output)
	base := strings.TrimSuffix(output, ext)
	if ext == "" {
		ext = ".png"
	}
	numbered := func(i int) string { return fmt.Sprintf("%s-%d%s", base, i, ext) }
	if batch == 1 && (explicit || !exists(base+ext)) {
		return []string{base + ext}
	}
	out := make([]string, 0, batch)
	for i := 1; len(out) < batch; i++ {
		if p := numbered(i); explicit || !exists(p) {
			out = append(out, p)
		}
	}
	return out
}

// exists reports whether a file (or link, or anything) is at path.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// checkWritable fails early, before any computation, when an output file
// cannot be created.
func checkWritable(path string) error {
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("--output %s: directory %s does not exist", path, dir)
	}
	if !st.IsDir() {
		return fmt.Errorf("--output %s: %s is not a directory", path, dir)
	}
	if st, err := os.Lstat(path); err == nil && !st.Mode().IsRegular() {
		return fmt.Errorf("--output %s: exists and is not a regular file", path)
	}
	f, err := os.CreateTemp(dir, ".darkroom-check-*")
	if err != nil {
		return fmt.Errorf("--output %s: cannot write to %s", path, dir)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// request returns the request the flags describe: the stored one of
// --from with the flags given explicitly applied, or the flags'.
func (f *genFlags) request(cmd *cobra.Command) (engine.Request, error) {
	var stored engine.Request
	f.fromFields = map[string]bool{}
	if f.from != "" {
		pr, err := engine.ReadPNGRequest(f.from)
		if err != nil {
			return engine.Request{}, err
		}
		stored = pr.Request
		for _, name := range pr.Fields {
			f.fromFields[name] = true
		}
		if pr.Source != engine.ChunkDarkroom {
			reportImport(cmd.ErrOrStderr(), f.from, pr)
		}
	}
	req := f.req
	if args := cmd.Flags().Args(); len(args) > 0 {
		if cmd.Flags().Changed("prompt") {
			return engine.Request{}, fmt.Errorf("the prompt is given twice, as an argument (%q) and with -p; give it once", args[0])
		}
		req.Prompt = args[0]
	}
	// --scheduler wins over a scheduler in the sampler's name ("DPM++ 2M
	// Karras"), whichever came first.
	if v, ok := cmd.Flags().Lookup("scheduler").Value.(*fieldValue); ok && cmd.Flags().Changed("scheduler") {
		if err := v.field.Set(&req, v.raw); err != nil {
			return engine.Request{}, err
		}
	}
	if f.from == "" || cmd.Flags().Changed("seed") {
		seed, err := parseSeed(f.seed)
		if err != nil {
			return engine.Request{}, err
		}
		req.Seed = seed
	}
	if f.from != "" {
		req = mergeFlags(cmd, stored, req)
	}
	if req.Model == "" || req.Model == engine.DefaultModel {
		req.Model = engine.DefaultModel
		applyDemoDefaults(cmd, &req, f.fromFields)
	}
	// Store absolute paths, so that --from works from any directory.
	if req.Model != engine.DefaultModel {
		req.Model = absIfExists(req.Model)
	}
	if req.VAE != "" {
		req.VAE = absIfExists(req.VAE)
	}
	if req.TextEncoders != nil {
		tes := make([]string, len(req.TextEncoders))
		for i, te := range req.TextEncoders {
			tes[i] = absIfExists(te)
		}
		req.TextEncoders = tes
	}
	return req, nil
}

// absIfExists returns the absolute path of a file that exists, and other
// names (of models in the model directories) as they are.
func absIfExists(path string) string {
	if _, err := os.Stat(path); err == nil {
		if abs, err := filepath.Abs(path); err == nil {
			return abs
		}
	}
	return path
}

func runGen(cmd *cobra.Command, f *genFlags) error {
	start := time.Now()
	req, err := f.request(cmd)
	if err != nil {
		return err
	}
	if err := checkExplicitZero(cmd, req); err != nil {
		return err
	}
	if f.viewScale == 0 && !cmd.Flags().Changed("view-scale") {
		f.viewScale = 1
		if req.Model == engine.DefaultModel {
			f.viewScale = demo.ViewScale
		}
	}
	if f.viewScale < 1 || f.viewScale > 64 {
		return fmt.Errorf("--view-scale %d: must be between 1 and 64", f.viewScale)
	}
	const maxSide = 16384
	if max(req.Width, req.Height)*f.viewScale > maxSide {
		return fmt.Errorf("--view-scale %d: a %dx%d image would be enlarged past %d pixels a side", f.viewScale, req.Width, req.Height, maxSide)
	}
	if err := req.Validate(); err != nil {
		return err
	}
	// -o naming something that is not a file (/dev/null) is refused as
	// given, before .png is added.
	if st, err := os.Lstat(f.output); err == nil && !st.Mode().IsRegular() {
		return fmt.Errorf("--output %s: exists and is not a regular file", f.output)
	}
	// One image of a batch (--batch-index, or --from on a batch's file) is
	// made with its whole batch and written alone.
	n := req.Batch
	if req.BatchIndex > 0 {
		n = 1
	}
	paths := outputPaths(f.output, n, cmd.Flags().Changed("output"))
	existed := make([]bool, len(paths))
	for i, p := range paths {
		if err := checkWritable(p); err != nil {
			return err
		}
		existed[i] = exists(p)
	}
	ctx := cmd.Context()
	eng, err := engine.Open(engine.Options{Device: f.device, Precision: f.precision, ModelDirs: f.models, LoRADirs: f.loraDirs, EmbeddingDirs: f.embDirs})
	if err != nil {
		return err
	}
	defer eng.Close()
	stderr := cmd.ErrOrStderr()
	if eng.Notice != "" {
		fmt.Fprintln(stderr, eng.Notice)
	}
	// A model that is not there is reported before anything else is said.
	if _, err := eng.Resolve(req.Model); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "seed: %d\n", req.Seed)
	m, err := eng.LoadRequest(ctx, req)
	if err != nil {
		return err
	}
	if req.Model != engine.DefaultModel {
		applyFamilyDefaults(cmd, &req, m.Defaults(), f.fromFields)
	}
	bar := newProgress(stderr)
	res, err := eng.Generate(ctx, req, bar.event)
	bar.finish()
	if err != nil {
		return err
	}
	// An img2img size taken from the init image is what the files record.
	req.Width, req.Height = res.Request.Width, res.Request.Height
	hash, err := m.Hash()
	if err != nil {
		return err
	}
	for _, n := range res.Notices {
		fmt.Fprintln(stderr, "note:", n)
	}
	if res.PeakMemory > 0 {
		fmt.Fprintf(stderr, "peak device memory: %.0f MiB\n", float64(res.PeakMemory)/(1<<20))
	}
	images := res.Images
	if req.BatchIndex > 0 {
		images = images[req.BatchIndex-1 : req.BatchIndex]
	}
	for i, img := range images {
		// Each file of a batch records which image it is.
		stored := req
		if req.Batch > 1 && req.BatchIndex == 0 {
			stored.BatchIndex = i + 1
		}
		if err := engine.SavePNG(paths[i], engine.Enlarge(img, f.viewScale), stored, hash, m.Name); err != nil {
			return err
		}
		if existed[i] {
			fmt.Fprintf(stderr, "overwrote %s\n", paths[i])
		}
		fmt.Fprintln(cmd.OutOrStdout(), paths[i])
	}
	fmt.Fprintf(stderr, "done in %.1f s → %s\n", time.Since(start).Seconds(), strings.Join(paths[:len(images)], ", "))
	return nil
}

// checkExplicitZero refuses 0 given explicitly for a field whose flag help
// gives a range from 1 (or above 0): the engine reads 0 as the default,
// which a user typing 0 does not mean.
func checkExplicitZero(cmd *cobra.Command, req engine.Request) error {
	switch {
	case cmd.Flags().Changed("clip-skip") && req.ClipSkip == 0:
		return &engine.FieldError{Field: "clip_skip", Value: 0, Msg: "must be ≥ 1 (1 = the last layer, 2 = the penultimate)"}
	case cmd.Flags().Changed("denoise") && req.Denoise == 0:
		return &engine.FieldError{Field: "denoise", Value: 0.0, Msg: "must be more than 0 and at most 1"}
	}
	return nil
}

// reportImport says on w which fields --from took from another program's
// PNG, and what it ignored.
func reportImport(w io.Writer, path string, pr engine.PNGRequest) {
	what := map[string]string{engine.ChunkParameters: "A1111 parameters", engine.ChunkComfyPrompt: "ComfyUI prompt"}[pr.Source]
	took := "nothing"
	if len(pr.Fields) > 0 {
		took = strings.Join(pr.Fields, ", ")
	}
	fmt.Fprintf(w, "%s: no darkroom metadata; from its %s took %s\n", path, what, took)
	if len(pr.Ignored) > 0 {
		fmt.Fprintf(w, "%s: ignored %s\n", path, strings.Join(pr.Ignored, ", "))
	}
}

// applyDemoDefaults sets the built-in model's own defaults for the flags
// the user did not give and --from did not set (its images are 32×32).
func applyDemoDefaults(cmd *cobra.Command, req *engine.Request, fromFields map[string]bool) {
	keep := func(flag string) bool { return cmd.Flags().Changed(flag) || fromFields[flag] }
	if !keep("width") {
		req.Width = demo.Width
	}
	if !keep("height") {
		req.Height = demo.Height
	}
	if !keep("steps") {
		req.Steps = demo.Steps
	}
	if !keep("cfg") {
		req.CFG = demo.CFG
	}
	applyInitSize(cmd, req, fromFields)
}

// applyFamilyDefaults sets the model family's defaults (size, steps, cfg,
// sampler, scheduler) for the flags the user did not give and --from did
// not set (these flags are named as their fields).
func applyFamilyDefaults(cmd *cobra.Command, req *engine.Request, d engine.Defaults, fromFields map[string]bool) {
	keep := func(flag string) bool { return flagGiven(cmd, flag) || fromFields[flag] }
	if !keep("width") && d.Width > 0 {
		req.Width = d.Width
	}
	if !keep("height") && d.Height > 0 {
		req.Height = d.Height
	}
	if !keep("steps") && d.Steps > 0 {
		req.Steps = d.Steps
	}
	if !keep("cfg") && d.CFG > 0 {
		req.CFG = d.CFG
	}
	if !keep("sampler") && d.Sampler != "" {
		req.Sampler = d.Sampler
	}
	if !keep("scheduler") && d.Scheduler != "" {
		req.Scheduler = d.Scheduler
	}
	applyInitSize(cmd, req, fromFields)
}

// applyInitSize leaves the size of an img2img request to its init image
// (the engine reads it) where the user gave no -W/-H.
func applyInitSize(cmd *cobra.Command, req *engine.Request, fromFields map[string]bool) {
	if req.InitImage == "" {
		return
	}
	keep := func(flag string) bool { return flagGiven(cmd, flag) || fromFields[flag] }
	if !keep("width") {
		req.Width = 0
	}
	if !keep("height") {
		req.Height = 0
	}
}

// mergeFlags starts from a stored request and applies the request fields
// whose flags the user set explicitly.
func mergeFlags(cmd *cobra.Command, stored, flags engine.Request) engine.Request {
	out := stored
	for _, field := range engine.RequestFields() {
		if field.Flag != "" && flagGiven(cmd, field.Flag) {
			field.Copy(&out, &flags)
		}
	}
	return out
}

// flagGiven reports whether the user gave the request field's flag: a
// positional prompt is -p, and a sampler name holding a scheduler
// ("DPM++ 2M Karras") gives --scheduler.
func flagGiven(cmd *cobra.Command, flag string) bool {
	fl := cmd.Flags()
	switch {
	case fl.Changed(flag):
		return true
	case flag == "prompt":
		return len(fl.Args()) > 0
	case flag == "scheduler":
		if v, ok := fl.Lookup("sampler").Value.(*fieldValue); ok && fl.Changed("sampler") {
			_, sch, _ := engine.CanonicalSampler(v.raw)
			return sch != ""
		}
	}
	return false
}

// progress draws a one-line progress bar on a terminal; elsewhere (a log,
// a pipe) it writes a line per sampling step for runs of up to 20 steps,
// else a line per 10% of the steps, each with the rate.
type progress struct {
	w       io.Writer
	tty     bool
	now     func() time.Time
	start   time.Time
	drawn   bool
	lastLen int
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, now: time.Now}
	p.start = p.now()
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	return p
}

// logEvery is how many steps apart a log writes progress lines.
func logEvery(total int) int {
	if total <= 20 {
		return 1
	}
	return (total + 9) / 10
}

func (p *progress) event(ev engine.Event) {
	switch ev.Phase {
	case engine.PhaseEncode:
		p.start = p.now()
		if p.tty {
			p.draw("encoding prompt")
		}
		return
	case engine.PhaseDecode:
		if p.tty {
			p.draw("decoding")
		}
		return
	case engine.PhaseSample:
	default:
		return
	}
	el := p.now().Sub(p.start).Seconds()
	rate := float64(ev.Step) / max(el, 1e-9)
	if !p.tty {
		if ev.Step%logEvery(ev.Total) == 0 || ev.Step == ev.Total {
			fmt.Fprintf(p.w, "step %d/%d (%d%%) %.2f it/s\n", ev.Step, ev.Total, ev.Step*100/max(ev.Total, 1), rate)
		}
		return
	}
	eta := time.Duration(float64(ev.Total-ev.Step) / rate * float64(time.Second)).Round(time.Second)
	const width = 30
	done := ev.Step * width / max(ev.Total, 1)
	p.draw(fmt.Sprintf("step %d/%d [%s%s] %.2f it/s ETA %s", ev.Step, ev.Total,
		strings.Repeat("=", done), strings.Repeat(" ", width-done), rate, eta))
}

// draw replaces the terminal's progress line.
func (p *progress) draw(line string) {
	pad := max(p.lastLen-len(line), 0)
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
	p.lastLen = len(line)
	p.drawn = true
}

func (p *progress) finish() {
	if p.drawn {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.lastLen))
	}
}
