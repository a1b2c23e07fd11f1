package weights

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// Layout is how a model is stored on disk.
type Layout string

// Layouts understood by OpenModel.
const (
	// SingleFile is one .safetensors checkpoint in the LDM layout
	// (A1111 / ComfyUI / civitai).
	SingleFile Layout = "single-file"
	// Diffusers is a diffusers pipeline folder (model_index.json, unet/,
	// vae/, text_encoder/, tokenizer/ ...).
	Diffusers Layout = "diffusers"
)

// FileInfo describes one weight file of a model.
type FileInfo struct {
	Path      string
	Size      int64  // bytes on disk
	Component string // diffusers component folder ("unet", "vae", "text_encoder"); empty for a single file
	Tensors   int
}

// Model is an opened checkpoint. Its Source methods use canonical names
// (see package keymap) whatever the layout on disk.
type Model struct {
	Source
	// Path is the file or folder given to OpenModel.
	Path   string
	Layout Layout
	Files  []FileInfo
	// TokenizerDir is the diffusers tokenizer folder holding vocab.json and
	// merges.txt, or empty when the model has none.
	TokenizerDir string
	// TokenizerDirs are a diffusers folder's tokenizer folders by name
	// ("tokenizer", "tokenizer_2", ...).
	TokenizerDirs map[string]string
	// Metadata is the safetensors "__metadata__" of a single file (nil for
	// diffusers folders).
	Metadata map[string]string
	// KeyList is set when the model is a key list (names, dtypes and
	// shapes without data; see ReadKeyList): it can be inspected, not run.
	KeyList *KeyList
	// JSON holds a diffusers folder's small JSON files by relative path
	// ("model_index.json", "scheduler/scheduler_config.json",
	// "unet/config.json", ...); nil for a single file.
	JSON map[string][]byte
}

// ErrNotModel is matched (errors.Is) when a path is neither a safetensors
// file nor a diffusers folder.
var ErrNotModel = errors.New("not a model")

// notModelError formats "<path>: <msg>" and matches ErrNotModel.
type notModelError struct{ path, msg string }

func (e *notModelError) Error() string        { return e.path + ": " + e.msg }
func (e *notModelError) Is(target error) bool { return target == ErrNotModel }

// OpenModel opens a single .safetensors checkpoint, a single .gguf file
// (city96's ComfyUI-GGUF and stable-diffusion.cpp files; quantised
// tensors are dequantised to float32 as they are read) or a diffusers
// folder and presents its tensors under canonical names. Every error starts with the
// path of the file or folder at fault.
func OpenModel(path string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !st.IsDir() {
		if lower := strings.ToLower(path); strings.HasSuffix(lower, ".json.gz") || strings.HasSuffix(lower, ".json") {
			kl, err := ReadKeyList(path)
			if err != nil {
				return nil, &notModelError{path, "not a model: a .json file is read as a darkroom key list: " + err.Error()}
			}
			m, err := kl.Open()
			if err != nil {
				return nil, err
			}
			m.Path, m.KeyList = path, kl
			return m, nil
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".ckpt", ".pt", ".pth", ".bin", ".onnx":
			return nil, &notModelError{path, "not a safetensors file (" + filepath.Ext(path) + " checkpoints are not supported; convert to .safetensors)"}
		}
		return openSingle(path)
	}
	return openDiffusers(path)
}

func openSingle(path string) (*Model, error) {
	f, err := openTensorFile(path)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(path)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return singleModel(f, path, st.Size())
}

// OpenBytes opens a single-file checkpoint held in memory (an embedded
// model); name stands in for the path in errors and in Files. data must not
// be modified while the model is open.
func OpenBytes(name string, data []byte) (*Model, error) {
	f, err := safetensors.FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return singleModel(f, name, int64(len(data)))
}

// shapesOf reads stored shapes from f for keymap's width checks.
func shapesOf(f tensorFile) keymap.Shapes {
	return func(name string) []int {
		info, ok := f.Info(name)
		if !ok {
			return nil
		}
		return info.Shape
	}
}

func singleModel(f tensorFile, path string, size int64) (*Model, error) {
	renames, err := keymap.SingleFile(f.Names(), shapesOf(f))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	v := newView()
	if err := v.add(f, renames); err != nil {
		v.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	v.finish()
	return &Model{
		Source:   v,
		Path:     path,
		Layout:   SingleFile,
		Files:    []FileInfo{{Path: path, Size: size, Tensors: len(f.Names())}},
		Metadata: f.Metadata(),
	}, nil
}

// component is one diffusers folder with a name converter to the
// canonical (LDM) namespace.
type component struct {
	dir     string // folder name
	base    string // weight file base name
	convert func([]string, keymap.Shapes) ([]keymap.Rename, error)
	// sdxlOnly: converted in SDXL pipelines only (elsewhere, e.g. Flux's
	// T5 or SD3's bigG, the folder keeps its stored names).
	sdxlOnly bool
}

func namesOnly(f func([]string) ([]keymap.Rename, error)) func([]string, keymap.Shapes) ([]keymap.Rename, error) {
	return func(names []string, _ keymap.Shapes) ([]keymap.Rename, error) { return f(names) }
}

var diffusersComponents = []component{
	{dir: "unet", base: "diffusion_pytorch_model", convert: namesOnly(keymap.DiffusersUNet)},
	{dir: "vae", base: "diffusion_pytorch_model", convert: namesOnly(keymap.DiffusersVAE)},
	{dir: "text_encoder", base: "model", convert: keymap.DiffusersTextEncoder},
	{dir: "text_encoder_2", base: "model", convert: keymap.DiffusersTextEncoderIn("clip_g"), sdxlOnly: true},
}

// sdPipelines are the diffusers pipeline classes whose unet/, vae/ and
// text_encoder/ are SD1/SD2 components: a name their converter does not
// know is an error there, never a reason to fall back to stored names.
var sdPipelines = map[string]bool{
	"StableDiffusionPipeline": true, "StableDiffusionImg2ImgPipeline": true,
	"StableDiffusionInpaintPipeline": true, "StableDiffusionUpscalePipeline": true,
	"LatentConsistencyModelPipeline": true, "StableDiffusionControlNetPipeline": true,
	"StableDiffusionInstructPix2PixPipeline": true, "StableDiffusionDepth2ImgPipeline": true,
}

// sdxlPipelines are the diffusers pipeline classes whose unet/, vae/,
// text_encoder/ (CLIP-L) and text_encoder_2/ (bigG) are SDXL components,
// converted as strictly as sdPipelines'. Not the ControlNet-XS pipeline,
// whose unet/ is a UNetControlNetXSModel.
var sdxlPipelines = map[string]bool{
	"StableDiffusionXLPipeline": true, "StableDiffusionXLImg2ImgPipeline": true,
	"StableDiffusionXLInpaintPipeline": true, "StableDiffusionXLInstructPix2PixPipeline": true,
	"StableDiffusionXLControlNetPipeline": true, "StableDiffusionXLControlNetImg2ImgPipeline": true,
	"StableDiffusionXLControlNetInpaintPipeline": true, "StableDiffusionXLControlNetUnionPipeline": true,
	"StableDiffusionXLControlNetUnionImg2ImgPipeline": true, "StableDiffusionXLControlNetUnionInpaintPipeline": true,
	"StableDiffusionXLAdapterPipeline": true, "StableDiffusionXLPAGPipeline": true,
	"StableDiffusionXLPAGImg2ImgPipeline": true, "StableDiffusionXLPAGInpaintPipeline": true,
	"StableDiffusionXLControlNetPAGPipeline": true, "StableDiffusionXLControlNetPAGImg2ImgPipeline": true,
}

// auxiliaryFolders are diffusers pipeline folders that hold no part of the
// generating model (the NSFW checker and its image processor, an image
// encoder for IP-Adapter); they are not opened, so a damaged one cannot
// stop a model from loading.
var auxiliaryFolders = map[string]bool{"safety_checker": true, "feature_extractor": true, "image_encoder": true}

// weightBases are the weight file base names of diffusers components
// (diffusers models, transformers models).
var weightBases = []string{"diffusion_pytorch_model", "model"}

// folder is what openDiffusers reads: a directory on disk, or a shape-only
// stand-in built from a key list (OpenKeyList).
type folder interface {
	// path joins rel to the folder's path, for messages and FileInfo.
	path(rel string) string
	isDir(rel string) bool
	isFile(rel string) bool
	readFile(rel string) ([]byte, error)
	// entries lists the names in a sub-folder, sorted.
	entries(rel string) []string
	open(rel string) (tensorFile, int64, error)
}

// tensorFile is one file of tensors: a safetensors file, a PyTorch
// checkpoint, or a shape-only stand-in.
type tensorFile = TensorFile

type osFolder string

func (f osFolder) path(rel string) string { return filepath.Join(string(f), rel) }
func (f osFolder) isDir(rel string) bool  { return isDir(f.path(rel)) }
func (f osFolder) isFile(rel string) bool { return isFile(f.path(rel)) }
func (f osFolder) readFile(rel string) ([]byte, error) {
	return os.ReadFile(f.path(rel))
}
func (f osFolder) entries(rel string) []string {
	des, err := os.ReadDir(f.path(rel))
	if err != nil {
		return nil
	}
	out := make([]string, len(des))
	for i, de := range des {
		out[i] = de.Name()
	}
	return out
}
func (f osFolder) open(rel string) (tensorFile, int64, error) {
	p := f.path(rel)
	sf, err := openTensorFile(p)
	if err != nil {
		return nil, 0, err
	}
	st, err := os.Stat(p)
	if err != nil {
		sf.Close()
		return nil, 0, fmt.Errorf("%s: %w", p, err)
	}
	return sf, st.Size(), nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// jsonFiles are the small JSON files of a diffusers folder kept in
// Model.JSON for probes and loaders: the pipeline index, the scheduler
// config and each component's config.
func jsonFiles(fs folder) map[string][]byte {
	out := map[string][]byte{}
	read := func(rel string) {
		if fs.isFile(rel) {
			if b, err := fs.readFile(rel); err == nil && len(b) < 1<<20 {
				out[rel] = b
			}
		}
	}
	read("model_index.json")
	for _, dir := range fs.entries("") {
		if fs.isDir(dir) {
			for _, name := range []string{"config.json", "scheduler_config.json"} {
				read(dir + "/" + name)
			}
		}
	}
	return out
}

// pipelineClass returns model_index.json's _class_name, or "".
func pipelineClass(files map[string][]byte) string {
	var idx struct {
		Class string `json:"_class_name"`
	}
	if b, ok := files["model_index.json"]; ok && json.Unmarshal(b, &idx) == nil {
		return idx.Class
	}
	return ""
}

func openDiffusers(path string) (*Model, error) {
	return openFolder(osFolder(path), path)
}

// openFolder reads a diffusers folder. unet/, vae/ and text_encoder/ (and
// text_encoder_2/ in an SDXL pipeline) are renamed to the canonical
// namespace when their converters know every name (text encoders to the
// keymap.Slots their width names: CLIP-L and ViT-H under
// "cond_stage_model.transformer.", bigG under keymap.CLIPGPrefix); every
// other component folder holding weights (transformer/, controlnet/,
// text_encoder_2/ outside SDXL, ...), and those when the folder is not a
// Stable Diffusion 1/2/XL pipeline and their names are not convertible, is
// presented with its stored names under "<folder>." (e.g.
// "transformer.transformer_blocks.0.attn.to_q.weight"), for the family
// that owns it to convert. Tokenizer folders are listed in TokenizerDirs.
func openFolder(fs folder, path string) (m *Model, err error) {
	found := fs.isFile("model_index.json") || fs.isDir("transformer")
	for _, c := range diffusersComponents {
		found = found || fs.isDir(c.dir)
	}
	if !found {
		return nil, &notModelError{path, "not a model: a folder needs model_index.json or unet/, vae/, text_encoder/, transformer/ (diffusers layout)"}
	}
	v := newView()
	defer func() {
		if err != nil {
			v.Close()
		}
	}()
	m = &Model{Source: v, Path: path, Layout: Diffusers, JSON: jsonFiles(fs), TokenizerDirs: map[string]string{}}
	class := pipelineClass(m.JSON)
	sdxl := sdxlPipelines[class]
	strict := class == "" || sdPipelines[class] || sdxl
	converters := map[string]component{}
	for _, c := range diffusersComponents {
		if !c.sdxlOnly || sdxl {
			converters[c.dir] = c
		}
	}
	// The LDM components first, in pipeline order, then the rest by name.
	dirs := []string{}
	for _, c := range diffusersComponents {
		if _, ok := converters[c.dir]; ok && fs.isDir(c.dir) {
			dirs = append(dirs, c.dir)
		}
	}
	for _, dir := range fs.entries("") {
		if _, known := converters[dir]; !known && !auxiliaryFolders[dir] && fs.isDir(dir) {
			dirs = append(dirs, dir)
		}
	}
	for _, dir := range dirs {
		if strings.HasPrefix(dir, "tokenizer") {
			m.TokenizerDirs[dir] = fs.path(dir)
			continue
		}
		c, known := converters[dir]
		if !known {
			c = component{dir: dir}
		}
		files, index, err := componentFiles(fs, dir, c.base)
		if err != nil {
			var nm *notModelError
			if !known && errors.As(err, &nm) {
				continue // scheduler/, feature_extractor/, ...: no weights
			}
			return nil, err
		}
		for _, rel := range files {
			f, size, err := fs.open(rel)
			if err != nil {
				return nil, err
			}
			if err := index.check(f); err != nil {
				f.Close()
				return nil, err
			}
			renames, err := componentRenames(c, f.Names(), shapesOf(f), strict)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: %w", f.Path(), err)
			}
			if err := v.add(f, renames); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			m.Files = append(m.Files, FileInfo{Path: f.Path(), Size: size, Component: dir, Tensors: len(f.Names())})
		}
	}
	if len(m.Files) == 0 {
		return nil, &notModelError{path, "not a model: no unet/, vae/, text_encoder/ or transformer/ weights found"}
	}
	v.finish()
	if tok := m.TokenizerDirs["tokenizer"]; tok != "" && fs.isFile("tokenizer/vocab.json") && fs.isFile("tokenizer/merges.txt") {
		m.TokenizerDir = tok
	}
	return m, nil
}

// componentRenames converts a component's stored names: with the LDM
// converter when it has one and knows every name, otherwise (outside
// strict SD pipelines) under "<folder>.".
func componentRenames(c component, names []string, shapes keymap.Shapes, strict bool) ([]keymap.Rename, error) {
	if c.convert != nil {
		r, err := c.convert(names, shapes)
		if err == nil || strict {
			return r, err
		}
	}
	out := make([]keymap.Rename, len(names))
	for i, n := range names {
		out[i] = keymap.Rename{From: n, To: c.dir + "." + n}
	}
	return out, nil
}

// componentFiles returns the safetensors files of one diffusers component,
// preferring full-precision files to the fp16 variant and a single file to
// a sharded one.
// An empty base tries every name of weightBases.
func componentFiles(fs folder, dir, base string) ([]string, *shardIndex, error) {
	type candidate struct {
		name    string
		indexed bool
	}
	bases := []string{base}
	if base == "" {
		bases = weightBases
	}
	for _, base := range bases {
		for _, c := range []candidate{
			{base + ".safetensors", false},
			{base + ".safetensors.index.json", true},
			{base + ".fp16.safetensors", false},
			{base + ".safetensors.index.fp16.json", true},
			{base + ".fp16.safetensors.index.json", true},
		} {
			rel := dir + "/" + c.name
			if !fs.isFile(rel) {
				continue
			}
			if !c.indexed {
				return []string{rel}, nil, nil
			}
			return shardFiles(fs, dir, rel)
		}
	}
	msg := fmt.Sprintf("no %s.safetensors (or .fp16 / sharded variant)", bases[0])
	for _, e := range fs.entries(dir) {
		if strings.HasSuffix(e, ".bin") {
			msg += "; PyTorch .bin files are not read, convert them to safetensors"
			break
		}
	}
	return nil, nil, &notModelError{fs.path(dir), msg}
}

// shardIndex is a parsed sharded-checkpoint index (nil for a single file).
type shardIndex struct {
	path      string
	weightMap map[string]string // tensor name -> shard file name
}

// check verifies that every tensor the index places in f's file is there.
func (x *shardIndex) check(f tensorFile) error {
	if x == nil {
		return nil
	}
	base := filepath.Base(f.Path())
	var missing []string
	for name, file := range x.weightMap {
		if file != base {
			continue
		}
		if _, ok := f.Info(name); !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("%s: %d tensors listed for %s are missing from it, e.g. %q", x.path, len(missing), base, missing[0])
	}
	return nil
}

// shardFiles reads a sharded-checkpoint index and returns its files.
func shardFiles(fs folder, dir, rel string) ([]string, *shardIndex, error) {
	index := fs.path(rel)
	b, err := fs.readFile(rel)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", index, err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, nil, fmt.Errorf("%s: invalid index: %v", index, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, nil, fmt.Errorf("%s: index has no weight_map entries", index)
	}
	seen := map[string]bool{}
	var files []string
	for tensorName, file := range idx.WeightMap {
		if file == "" || filepath.Base(file) != file || strings.HasPrefix(file, ".") {
			return nil, nil, fmt.Errorf("%s: tensor %q: shard %q is not a file name in the same folder", index, tensorName, file)
		}
		if !seen[file] {
			seen[file] = true
			files = append(files, dir+"/"+file)
		}
	}
	sort.Strings(files)
	return files, &shardIndex{path: index, weightMap: idx.WeightMap}, nil
}

// StoredName returns the name a canonical tensor has in its file, or name
// itself when it was not renamed (or the model has no such tensor).
func (m *Model) StoredName(name string) string {
	if v, ok := m.Source.(interface{ Stored(string) (string, bool) }); ok {
		if s, ok := v.Stored(name); ok {
			return s
		}
	}
	return name
}
