package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
)

// variants are the weight variants diffusers names files with
// (diffusion_pytorch_model.fp16.safetensors), most wanted first after the
// plain file.
var variants = []string{"fp16", "bf16", "fp32", "non_ema", "ema", "fp8"}

// variantOf returns the variant a safetensors file (or its shard index) is
// named with, or "".
func variantOf(name string) string {
	base := strings.TrimSuffix(strings.TrimSuffix(name, ".json"), ".safetensors")
	for _, v := range variants {
		switch {
		// a.fp16.safetensors, a.safetensors.index.fp16.json,
		// a.fp16-00001-of-00002.safetensors
		case strings.HasSuffix(base, "."+v), strings.Contains(base, "."+v+"-"):
			return v
		}
	}
	return ""
}

func isWeights(name string) bool {
	return strings.HasSuffix(name, ".safetensors") || (strings.Contains(name, ".safetensors.index") && strings.HasSuffix(name, ".json"))
}

// pickVariants keeps, among the weight files of one folder, the plain
// (non-variant) ones when there are any, else those of the most wanted
// variant present.
func pickVariants(names []string) []string {
	byVariant := map[string][]string{}
	for _, n := range names {
		v := variantOf(n)
		byVariant[v] = append(byVariant[v], n)
	}
	for _, v := range append([]string{""}, variants...) {
		if len(byVariant[v]) > 0 {
			return byVariant[v]
		}
	}
	return nil
}

// skipComponents are pipeline parts darkroom never opens; their weights
// are not pulled.
var skipComponents = map[string]bool{"safety_checker": true}

// PipelineFiles chooses, from a repository's files, those a diffusers
// pipeline needs: model_index.json and, in each component folder that
// modelIndex (the contents of model_index.json) names, the JSON configs,
// the tokenizer files and the .safetensors weights (the plain variant when
// there is one). Nested folders (onnx/, openvino/, flax), .bin, .ckpt,
// .onnx, .msgpack and .pt files are skipped. Without a model index (a repo
// that is not a pipeline, such as a lone VAE) the files at the top level
// are chosen by the same rules.
func PipelineFiles(files []File, modelIndex []byte) ([]File, error) {
	dirs := map[string]bool{}
	if modelIndex != nil {
		var idx map[string]json.RawMessage
		if err := json.Unmarshal(modelIndex, &idx); err != nil {
			return nil, fmt.Errorf("model_index.json: %w", err)
		}
		for k, v := range idx {
			var pair []*string
			if strings.HasPrefix(k, "_") || json.Unmarshal(v, &pair) != nil || len(pair) != 2 || pair[0] == nil || skipComponents[k] {
				continue
			}
			dirs[k] = true
		}
	} else {
		dirs["."] = true
	}
	byDir := map[string][]File{}
	for _, f := range files {
		d, name := path.Split(f.Path)
		d = strings.TrimSuffix(d, "/")
		if d == "" {
			d = "."
		}
		if !dirs[d] {
			if modelIndex != nil && f.Path == "model_index.json" {
				byDir["."] = append(byDir["."], f)
			}
			continue
		}
		tokenizer := strings.HasPrefix(d, "tokenizer") && (strings.HasSuffix(name, ".txt") || strings.HasSuffix(name, ".model"))
		if strings.HasSuffix(name, ".json") || tokenizer || isWeights(name) {
			byDir[d] = append(byDir[d], f)
		}
	}
	var out []File
	for _, fs := range byDir {
		var weights []string
		for _, f := range fs {
			if isWeights(path.Base(f.Path)) {
				weights = append(weights, path.Base(f.Path))
			}
		}
		keep := pickVariants(weights)
		for _, f := range fs {
			if b := path.Base(f.Path); !isWeights(b) || slices.Contains(keep, b) {
				out = append(out, f)
			}
		}
	}
	slices.SortFunc(out, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// Pulled is the result of a pull.
type Pulled struct {
	Repo, Commit string
	Dir          string   // the snapshot folder
	Files        []string // the files pulled, relative to Dir
}

// PullRepo fetches what a pipeline needs of repo at rev ("" means main)
// into the cache (PipelineFiles) and records refs/<rev>. Files already in
// the cache are not fetched again.
func (c *Client) PullRepo(ctx context.Context, repo, rev string) (*Pulled, error) {
	if rev == "" {
		rev = "main"
	}
	commit, err := c.Commit(ctx, repo, rev)
	if err != nil {
		return nil, err
	}
	all, err := c.Files(ctx, repo, commit)
	if err != nil {
		return nil, err
	}
	var index []byte
	if slices.ContainsFunc(all, func(f File) bool { return f.Path == "model_index.json" }) {
		p, _, err := c.download(ctx, repo, commit, "model_index.json", 0, 0)
		if err != nil {
			return nil, err
		}
		if index, err = os.ReadFile(p); err != nil {
			return nil, err
		}
	}
	files, err := PipelineFiles(all, index)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no model_index.json, config or .safetensors file to pull (name one file: %s/PATH)", repo, repo)
	}
	out := &Pulled{Repo: repo, Commit: commit}
	for i, f := range files {
		p, _, err := c.download(ctx, repo, commit, f.Path, i+1, len(files))
		if err != nil {
			return nil, err
		}
		out.Files = append(out.Files, f.Path)
		out.Dir = strings.TrimSuffix(p, string(os.PathSeparator)+strings.ReplaceAll(f.Path, "/", string(os.PathSeparator)))
	}
	if err := writeRef(c.cache(), repo, rev, commit); err != nil {
		return nil, err
	}
	return out, nil
}

// PullFile fetches one file of repo at rev ("" means main) into the cache.
func (c *Client) PullFile(ctx context.Context, repo, rev, file string) (*Pulled, error) {
	p, commit, err := c.download(ctx, repo, rev, file, 1, 1)
	if err != nil {
		return nil, err
	}
	dir := strings.TrimSuffix(p, string(os.PathSeparator)+strings.ReplaceAll(file, "/", string(os.PathSeparator)))
	return &Pulled{Repo: repo, Commit: commit, Dir: dir, Files: []string{file}}, nil
}
