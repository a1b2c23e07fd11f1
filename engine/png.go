package engine

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// PNG text chunk keywords written by darkroom.
const (
	// ChunkParameters holds A1111-style generation parameters, which A1111,
	// civitai and most image browsers read.
	ChunkParameters = "parameters"
	// ChunkDarkroom holds the exact Request as JSON.
	ChunkDarkroom = "darkroom"
)

// A1111Parameters formats the A1111 "parameters" text for a request:
//
//	PROMPT
//	Negative prompt: NEGATIVE
//	Steps: 20, Sampler: Euler, ..., Size: 512x512, Model hash: HASH, Model: NAME, Version: darkroom
//
// Every request field with an A1111 key (RequestField.A1111) is written, in
// RequestFields order; optional ones (negative prompt, clip skip > 1, ...)
// only when set. "Model" is modelName (after "Model hash", modelHash), not
// the path in req.Model; either may be empty.
func A1111Parameters(req Request, modelHash, modelName string) string {
	meta := a1111Meta{modelHash: modelHash, modelName: modelName}
	var b strings.Builder
	var settings []string
	for _, f := range requestFields {
		if f.a1111Write == nil {
			continue
		}
		for _, p := range f.a1111Write(&req, meta) {
			switch p.key {
			case a1111Prompt:
				b.WriteString(p.value)
			case a1111Negative:
				b.WriteString("\n" + a1111Negative + ": " + p.value)
			default:
				settings = append(settings, p.key+": "+quoteA1111(p.value))
			}
		}
	}
	settings = append(settings, "Version: darkroom")
	b.WriteString("\n" + strings.Join(settings, ", "))
	return b.String()
}

// ParseA1111Parameters reads A1111 "parameters" text, as A1111Parameters,
// A1111 and its forks write it, into a request: the fields with an A1111
// key are set from the text, the others (and keyed fields the text lacks)
// keep DefaultRequest's values. Model is the model's name ("Model") and
// modelHash its "Model hash", "" when absent. Keys darkroom has no field
// for are ignored; a value that does not parse is an error wrapping a
// *FieldError.
func ParseA1111Parameters(text string) (req Request, modelHash string, err error) {
	params := splitA1111(text)
	req = DefaultRequest()
	for _, f := range requestFields {
		if f.a1111Read == nil {
			continue
		}
		if err := f.a1111Read(&req, params); err != nil {
			return Request{}, "", fmt.Errorf("A1111 parameters: %w", err)
		}
	}
	return req, params[a1111ModelHash], nil
}

// A1111 keys that are not settings: the prompt is the text's first lines,
// the negative prompt the lines after "Negative prompt: ". The model hash
// is written with the model.
const (
	a1111Prompt    = "Prompt"
	a1111Negative  = "Negative prompt"
	a1111ModelHash = "Model hash"
)

// a1111Meta is what A1111 text holds beside the request.
type a1111Meta struct{ modelHash, modelName string }

// a1111Pair is one "Key: value" of A1111 text.
type a1111Pair struct{ key, value string }

// quoteA1111 quotes a settings value that holds a comma, a colon or a
// double quote, as A1111's infotext writer does (json.dumps), so that its
// parser (and a1111Setting) reads it back whole.
func quoteA1111(v string) string {
	if strings.ContainsAny(v, ",:\"") {
		return strconv.Quote(v)
	}
	return v
}

// a1111Setting is one "Key: value" of A1111's settings line, as A1111's
// own infotext parser matches it (a value in double quotes may hold commas).
var a1111Setting = regexp.MustCompile(`\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)`)

// splitA1111 splits A1111 text into its prompt, negative prompt and
// settings, keyed as RequestField.A1111.
func splitA1111(text string) map[string]string {
	params := map[string]string{}
	lines := strings.Split(strings.TrimRight(text, "\r\n"), "\n")
	if last := lines[len(lines)-1]; len(a1111Setting.FindAllString(last, 3)) >= 3 {
		lines = lines[:len(lines)-1]
		for _, m := range a1111Setting.FindAllStringSubmatch(last, -1) {
			k, v := strings.TrimSpace(m[1]), strings.TrimSpace(m[2])
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				if u, err := strconv.Unquote(v); err == nil {
					v = u
				}
			}
			params[k] = v
		}
	}
	var prompt, negative []string
	inNegative := false
	for _, line := range lines {
		line = strings.TrimSuffix(line, "\r")
		if rest, ok := strings.CutPrefix(line, a1111Negative+":"); ok && !inNegative {
			inNegative = true
			line = strings.TrimPrefix(rest, " ")
		}
		if inNegative {
			negative = append(negative, line)
		} else {
			prompt = append(prompt, line)
		}
	}
	params[a1111Prompt] = strings.Join(prompt, "\n")
	if inNegative {
		params[a1111Negative] = strings.Join(negative, "\n")
	}
	return params
}

// a1111Name returns a writer of names[v] (v itself when names lacks it).
func a1111Name(names map[string]string) func(string) (string, bool) {
	return func(v string) (string, bool) {
		if n, ok := names[v]; ok {
			return n, true
		}
		return v, true
	}
}

// writeSampler writes the sampler's A1111 name.
func writeSampler(r *Request, _ a1111Meta) []a1111Pair {
	n, _ := a1111Name(a1111Samplers)(r.Sampler)
	return []a1111Pair{{"Sampler", n}}
}

// readSampler reads "Sampler" in any spelling CanonicalSampler accepts; a
// name holding a scheduler (older A1111: "DPM++ 2M Karras") sets the
// scheduler too, which a "Schedule type" read after it overrides.
func readSampler(r *Request, params map[string]string) error {
	if s, ok := params["Sampler"]; ok {
		return setSampler(r, s)
	}
	return nil
}

// writeSchedule writes the scheduler's A1111 name ("Schedule type").
func writeSchedule(r *Request, _ a1111Meta) []a1111Pair {
	n, _ := a1111Name(a1111Schedules)(r.Scheduler)
	return []a1111Pair{{"Schedule type", n}}
}

// readSchedule reads "Schedule type"; A1111's "Automatic" (the sampler's
// own choice) keeps the scheduler the sampler's name gave, or the default.
func readSchedule(r *Request, params map[string]string) error {
	if s, ok := params["Schedule type"]; ok && s != "Automatic" {
		return setScheduler(r, s)
	}
	return nil
}

// a1111Text makes s safe as an unquoted A1111 value.
var a1111Text = strings.NewReplacer(",", " ", "\n", " ")

// a1111BaseName is a file's name without its folder, as A1111 writes
// "VAE: name.safetensors".
func a1111BaseName(path string) string {
	if i := strings.LastIndexAny(path, `/\`); i >= 0 {
		path = path[i+1:]
	}
	return a1111Text.Replace(path)
}

// writeDenoise writes a denoising strength below 1.
func writeDenoise(r *Request, _ a1111Meta) []a1111Pair {
	if r.Denoise > 0 && r.Denoise < 1 && r.Hires <= 1 {
		return []a1111Pair{{"Denoising strength", formatFloat(r.Denoise)}}
	}
	return nil
}

// readDenoise reads the denoising strength, except A1111's hires fix's
// (of its second pass: the image itself was made from noise).
func readDenoise(r *Request, params map[string]string) error {
	s, ok := params["Denoising strength"]
	if _, hires := params["Hires upscale"]; !ok || hires {
		return nil
	}
	v, err := parseFloat(s)
	if err != nil {
		return &FieldError{Field: "denoise", Value: s, Msg: err.Error()}
	}
	r.Denoise = v
	return nil
}

// writeHiresDenoise writes a hires fix's second-pass strength as A1111
// does: "Denoising strength" beside "Hires upscale".
func writeHiresDenoise(r *Request, _ a1111Meta) []a1111Pair {
	if r.Hires > 1 && r.HiresDenoise != 0 {
		return []a1111Pair{{"Denoising strength", formatFloat(r.HiresDenoise)}}
	}
	return nil
}

// readHiresDenoise reads "Denoising strength" as the hires pass's when
// the text has "Hires upscale".
func readHiresDenoise(r *Request, params map[string]string) error {
	s, ok := params["Denoising strength"]
	if _, hires := params["Hires upscale"]; !ok || !hires {
		return nil
	}
	v, err := parseFloat(s)
	if err != nil {
		return &FieldError{Field: "hires_denoise", Value: s, Msg: err.Error()}
	}
	r.HiresDenoise = v
	return nil
}

// a1111Upscalers are A1111's names of the hires upscalers darkroom has.
var a1111Upscalers = map[string]string{
	UpscaleLanczos:        "Lanczos",
	UpscaleLatentBilinear: "Latent",
	UpscaleLatentBicubic:  "Latent (bicubic)",
	UpscaleLatentNearest:  "Latent (nearest-exact)",
	UpscaleLatentBislerp:  "Latent (bislerp)",
}

// a1111UpscalerModels are A1111's names of its Real-ESRGAN models and
// the release files they are (the names the models are found by in
// upscale_models); its ESRGAN models are named by their file names.
var a1111UpscalerModels = map[string]string{
	"R-ESRGAN 4x+":          "RealESRGAN_x4plus",
	"R-ESRGAN 4x+ Anime6B":  "RealESRGAN_x4plus_anime_6B",
	"R-ESRGAN 2x+":          "RealESRGAN_x2plus",
	"R-ESRGAN General 4xV3": "realesr-general-x4v3",
	"R-ESRGAN AnimeVideo":   "realesr-animevideov3",
}

// a1111NotUpscalerModels are A1111's upscalers of other kinds, which a
// PNG may name and darkroom has no counterpart for: reading them leaves
// the default.
var a1111NotUpscalerModels = []string{"none", "nearest", "ldsr", "scunet", "scunet gan", "scunet psnr", "swinir_4x", "swinir 4x", "dat x2", "dat x3", "dat x4"}

// writeHiresUpscaler writes A1111's name of the upscaler: the built-in
// methods' names, a model's file name without its extension
// ("4x-UltraSharp"), as A1111 lists its ESRGAN models.
func writeHiresUpscaler(r *Request, _ a1111Meta) []a1111Pair {
	if r.Hires <= 1 || r.HiresUpscaler == "" {
		return nil
	}
	if IsUpscalerModel(r.HiresUpscaler) {
		name := upscalerName(r.HiresUpscaler)
		for a, file := range a1111UpscalerModels {
			if strings.EqualFold(file, name) {
				name = a
			}
		}
		return []a1111Pair{{"Hires upscaler", name}}
	}
	return []a1111Pair{{"Hires upscaler", a1111Upscalers[r.HiresUpscaler]}}
}

// readHiresUpscaler maps A1111's upscaler names (its antialiased latent
// variants to the plain ones); another name is an upscaler model, found
// by that name in upscale_models when the job runs (A1111's Real-ESRGAN
// names become their release files' names, "R-ESRGAN 4x+" →
// RealESRGAN_x4plus); A1111's upscalers of other kinds (SwinIR, LDSR,
// ScuNET, DAT, None) leave the default.
func readHiresUpscaler(r *Request, params map[string]string) error {
	s, ok := params["Hires upscaler"]
	if !ok {
		return nil
	}
	name := strings.TrimSpace(strings.ReplaceAll(s, " antialiased", ""))
	name = strings.ReplaceAll(name, "(antialiased)", "")
	name = strings.TrimSpace(strings.ReplaceAll(name, "(nearest)", "(nearest-exact)"))
	for k, v := range a1111Upscalers {
		if strings.EqualFold(v, name) {
			r.HiresUpscaler = k
			return nil
		}
	}
	if file, ok := a1111UpscalerModels[strings.TrimSpace(s)]; ok {
		r.HiresUpscaler = file
		return nil
	}
	if slices.Contains(a1111NotUpscalerModels, strings.ToLower(strings.TrimSpace(s))) || strings.HasPrefix(strings.ToLower(name), "latent") || strings.TrimSpace(s) == "" {
		return nil
	}
	r.HiresUpscaler = strings.TrimSpace(s)
	return nil
}

// writeVariationSeed writes the variation seed when it is used.
func writeVariationSeed(r *Request, _ a1111Meta) []a1111Pair {
	if r.VariationStrength == 0 {
		return nil
	}
	return []a1111Pair{{"Variation seed", strconv.FormatUint(r.VariationSeed, 10)}}
}

func readVariationSeed(r *Request, params map[string]string) error {
	s, ok := params["Variation seed"]
	if !ok {
		return nil
	}
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return &FieldError{Field: "variation_seed", Value: s, Msg: "want a seed (0 to 2^64-1)"}
	}
	r.VariationSeed = v
	return nil
}

// writeSeedResize writes "Seed resize from: WIDTHxHEIGHT" when set.
func writeSeedResize(r *Request, _ a1111Meta) []a1111Pair {
	if r.SeedResizeFromW <= 0 || r.SeedResizeFromH <= 0 {
		return nil
	}
	return []a1111Pair{{"Seed resize from", fmt.Sprintf("%dx%d", r.SeedResizeFromW, r.SeedResizeFromH)}}
}

func readSeedResize(r *Request, params map[string]string) error {
	s, ok := params["Seed resize from"]
	if !ok {
		return nil
	}
	ws, hs, ok := strings.Cut(s, "x")
	w, err1 := strconv.Atoi(strings.TrimSpace(ws))
	h, err2 := strconv.Atoi(strings.TrimSpace(hs))
	if !ok || err1 != nil || err2 != nil {
		return &FieldError{Field: "seed_resize_from_w", Value: s, Msg: "Seed resize from: want WIDTHxHEIGHT"}
	}
	if w > 0 && h > 0 { // A1111 writes -1x-1 for "off"
		r.SeedResizeFromW, r.SeedResizeFromH = w, h
	}
	return nil
}

// writeSize writes width and height as "Size: WIDTHxHEIGHT".
func writeSize(r *Request, _ a1111Meta) []a1111Pair {
	return []a1111Pair{{"Size", fmt.Sprintf("%dx%d", r.Width, r.Height)}}
}

func readSize(r *Request, params map[string]string) error {
	s, ok := params["Size"]
	if !ok {
		return nil
	}
	ws, hs, ok := strings.Cut(s, "x")
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	if !ok || err1 != nil || err2 != nil {
		return &FieldError{Field: "width", Value: s, Msg: "Size: want WIDTHxHEIGHT"}
	}
	r.Width, r.Height = w, h
	return nil
}

// writeModel writes the model's hash and name (not the request's path).
func writeModel(_ *Request, m a1111Meta) []a1111Pair {
	var out []a1111Pair
	if m.modelHash != "" {
		out = append(out, a1111Pair{a1111ModelHash, m.modelHash})
	}
	if m.modelName != "" {
		out = append(out, a1111Pair{"Model", a1111Text.Replace(m.modelName)})
	}
	return out
}

func readModel(r *Request, params map[string]string) error {
	if s, ok := params["Model"]; ok {
		r.Model = s
	}
	return nil
}

// EncodePNG writes img as PNG with tEXt chunks (keyword → text, Latin-1
// keywords; text written as UTF-8 in iTXt when it is not Latin-1).
func EncodePNG(w io.Writer, img image.Image, text map[string]string) error {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return fmt.Errorf("encode png: %w", err)
	}
	data := buf.Bytes()
	// Signature (8) + IHDR chunk (4 len + 4 type + 13 data + 4 crc) = 33 bytes.
	const afterIHDR = 33
	if len(data) < afterIHDR || string(data[12:16]) != "IHDR" {
		return errors.New("encode png: unexpected encoder output")
	}
	if _, err := w.Write(data[:afterIHDR]); err != nil {
		return err
	}
	for _, k := range sortedKeys(text) {
		if err := writeTextChunk(w, k, text[k]); err != nil {
			return err
		}
	}
	_, err := w.Write(data[afterIHDR:])
	return err
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Deterministic order: parameters first (what browsers look for), then the rest.
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if keys[j] < keys[i] {
				keys[i], keys[j] = keys[j], keys[i]
			}
		}
	}
	return keys
}

func isLatin1(s string) bool {
	for _, r := range s {
		if r > 0xff {
			return false
		}
	}
	return true
}

func writeTextChunk(w io.Writer, key, value string) error {
	var body []byte
	typ := "tEXt"
	if isLatin1(value) && !strings.ContainsRune(value, 0) {
		body = append([]byte(key), 0)
		for _, r := range value {
			body = append(body, byte(r))
		}
	} else {
		// iTXt: keyword, 0, compression flag 0, method 0, empty language, 0, empty translated keyword, 0, UTF-8 text.
		typ = "iTXt"
		body = append([]byte(key), 0, 0, 0, 0, 0)
		body = append(body, value...)
	}
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(body)))
	copy(hdr[4:], typ)
	crc := crc32.NewIEEE()
	crc.Write(hdr[4:])
	crc.Write(body)
	var tail [4]byte
	binary.BigEndian.PutUint32(tail[:], crc.Sum32())
	for _, part := range [][]byte{hdr[:], body, tail[:]} {
		if _, err := w.Write(part); err != nil {
			return err
		}
	}
	return nil
}

// ReadPNGText returns the tEXt and iTXt (uncompressed) chunks of a PNG file.
func ReadPNGText(r io.Reader) (map[string]string, error) {
	var sig [8]byte
	if _, err := io.ReadFull(r, sig[:]); err != nil || string(sig[:]) != "\x89PNG\r\n\x1a\n" {
		return nil, errors.New("not a PNG file")
	}
	out := map[string]string{}
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, fmt.Errorf("read png chunk: %w", err)
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		typ := string(hdr[4:])
		if n > 64<<20 && (typ == "tEXt" || typ == "iTXt") {
			return nil, fmt.Errorf("png text chunk of %d bytes is too large", n)
		}
		if typ == "IEND" {
			return out, nil
		}
		if typ != "tEXt" && typ != "iTXt" {
			if _, err := io.CopyN(io.Discard, r, int64(n)+4); err != nil {
				return nil, fmt.Errorf("read png chunk %q: %w", typ, err)
			}
			continue
		}
		body := make([]byte, n+4)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, fmt.Errorf("read png chunk %q: %w", typ, err)
		}
		body = body[:n]
		key, rest, ok := bytes.Cut(body, []byte{0})
		if !ok {
			continue
		}
		if typ == "tEXt" {
			runes := make([]rune, len(rest))
			for i, c := range rest {
				runes[i] = rune(c)
			}
			out[string(key)] = string(runes)
			continue
		}
		// iTXt: compression flag, method, language\0, translated keyword\0, text.
		if len(rest) < 2 || rest[0] != 0 {
			continue // compressed iTXt is not used by darkroom
		}
		rest = rest[2:]
		if _, rest, ok = bytes.Cut(rest, []byte{0}); !ok {
			continue
		}
		if _, rest, ok = bytes.Cut(rest, []byte{0}); !ok {
			continue
		}
		out[string(key)] = string(rest)
	}
}

// SavePNG writes img to path atomically (a temporary file renamed into
// place) with the A1111 parameters and the darkroom request chunks.
func SavePNG(path string, img image.Image, req Request, modelHash, modelName string) error {
	reqJSON, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	text := map[string]string{
		ChunkParameters: A1111Parameters(req, modelHash, modelName),
		ChunkDarkroom:   string(reqJSON),
	}
	return WritePNG(path, img, text)
}

// WritePNG writes img with the text chunks to path through a temporary
// file in the same folder, so that a failed write leaves no partial file
// (and an existing file stays until the new one is complete).
func WritePNG(path string, img image.Image, text map[string]string) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".darkroom-*.png")
	if err != nil {
		return fmt.Errorf("%s: cannot write: %w", path, unwrapPathErr(err))
	}
	defer os.Remove(tmp.Name())
	if err := EncodePNG(tmp, img, text); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	// CreateTemp makes the file private; an image is an ordinary file.
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("%s: %w", path, unwrapPathErr(err))
	}
	return nil
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// RequestFromPNG reads the darkroom request stored in a PNG written by
// SavePNG.
func RequestFromPNG(path string) (Request, error) {
	f, err := os.Open(path)
	if err != nil {
		return Request{}, fmt.Errorf("%s: %w", path, unwrapPathErr(err))
	}
	defer f.Close()
	text, err := ReadPNGText(f)
	if err != nil {
		return Request{}, fmt.Errorf("%s: %w", path, err)
	}
	js, ok := text[ChunkDarkroom]
	if !ok {
		return Request{}, fmt.Errorf("%s: no %q metadata chunk (not written by darkroom)", path, ChunkDarkroom)
	}
	req := DefaultRequest() // fields the chunk lacks keep their defaults
	if err := json.Unmarshal([]byte(js), &req); err != nil {
		return Request{}, fmt.Errorf("%s: bad %q metadata: %w", path, ChunkDarkroom, err)
	}
	return req, nil
}
