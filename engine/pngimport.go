package engine

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// ChunkComfyPrompt is the PNG text chunk in which ComfyUI stores the
// prompt (the API-format node graph it ran); "workflow" holds the editor's
// graph, which darkroom does not read.
const ChunkComfyPrompt = "prompt"

// PNGRequest is a request read from the metadata of a PNG that darkroom,
// A1111 (and its forks) or ComfyUI wrote.
type PNGRequest struct {
	Request Request
	// Source is the chunk read: ChunkDarkroom, ChunkParameters or
	// ChunkComfyPrompt.
	Source string
	// Fields are the JSON names of the request fields the chunk set, in
	// RequestFields order (every field for darkroom's chunk); the others
	// keep DefaultRequest's values.
	Fields []string
	// Ignored says what the chunk held that maps to no request field:
	// A1111 keys, ComfyUI nodes and inputs.
	Ignored []string
}

// ReadPNGRequest reads the request stored in a PNG: darkroom's own chunk
// when there is one (as RequestFromPNG), else A1111's "parameters" text
// (ParseA1111Parameters), else ComfyUI's "prompt" graph
// (ParseComfyUIPrompt).
func ReadPNGRequest(path string) (PNGRequest, error) {
	f, err := os.Open(path)
	if err != nil {
		return PNGRequest{}, fmt.Errorf("%s: %w", path, unwrapPathErr(err))
	}
	text, err := ReadPNGText(f)
	f.Close()
	if err != nil {
		return PNGRequest{}, fmt.Errorf("%s: %w", path, err)
	}
	if _, ok := text[ChunkDarkroom]; ok {
		req, err := RequestFromPNG(path)
		if err != nil {
			return PNGRequest{}, err
		}
		var all []string
		for _, f := range requestFields {
			all = append(all, f.Name)
		}
		return PNGRequest{Request: req, Source: ChunkDarkroom, Fields: all}, nil
	}
	if params, ok := text[ChunkParameters]; ok {
		pr, err := parseA1111Import(params)
		if err != nil {
			return PNGRequest{}, fmt.Errorf("%s: %w", path, err)
		}
		return pr, nil
	}
	if js, ok := text[ChunkComfyPrompt]; ok {
		pr, err := ParseComfyUIPrompt(js)
		if err != nil {
			return PNGRequest{}, fmt.Errorf("%s: %w", path, err)
		}
		return pr, nil
	}
	return PNGRequest{}, fmt.Errorf("%s: no generation metadata (no %q, %q or %q chunk)", path, ChunkDarkroom, ChunkParameters, ChunkComfyPrompt)
}

// parseA1111Import is ParseA1111Parameters saying which fields the text
// set and which of its keys were ignored.
func parseA1111Import(text string) (PNGRequest, error) {
	req, _, err := ParseA1111Parameters(text)
	if err != nil {
		return PNGRequest{}, err
	}
	params := splitA1111(text)
	_, hires := params["Hires upscale"]
	used := map[string]bool{a1111Prompt: true, a1111Negative: true, a1111ModelHash: true, "Version": true}
	pr := PNGRequest{Request: req, Source: ChunkParameters}
	for _, f := range requestFields {
		if f.A1111 == "" {
			continue
		}
		used[f.A1111] = true
		v, ok := params[f.A1111]
		switch f.Name {
		case "denoise":
			ok = ok && !hires // the hires fix's second pass's strength
			used[f.A1111] = ok
		case "negative":
			ok = ok && v != ""
		case "scheduler": // also from the sampler's name ("DPM++ 2M Karras")
			_, inName, _ := CanonicalSampler(params["Sampler"])
			ok = (ok && v != "Automatic") || inName != ""
		}
		if ok {
			pr.Fields = append(pr.Fields, f.Name)
		}
	}
	for k := range params {
		if !used[k] {
			pr.Ignored = append(pr.Ignored, k)
		}
	}
	slices.Sort(pr.Ignored)
	return pr, nil
}

// comfyNode is a node of ComfyUI's API-format prompt.
type comfyNode struct {
	Class  string                     `json:"class_type"`
	Inputs map[string]json.RawMessage `json:"inputs"`
}

// ParseComfyUIPrompt reads what maps simply from ComfyUI's API-format
// prompt graph (the PNG "prompt" chunk): the KSampler's seed, steps, cfg,
// sampler_name, scheduler and denoise; the text of the CLIPTextEncode
// nodes its positive and negative inputs link to (and clip skip from a
// CLIPSetLastLayer before them); the EmptyLatentImage's width, height and
// batch_size; the CheckpointLoaderSimple's ckpt_name (through nodes that
// pass the model on, such as LoraLoader, which are reported as ignored).
// Nodes that were not read, other than the VAEDecode and image outputs,
// are listed in Ignored, as are the inputs that do not map. A graph with
// no KSampler is an error; of several, the first by node id is read.
func ParseComfyUIPrompt(js string) (PNGRequest, error) {
	var graph map[string]comfyNode
	if err := json.Unmarshal([]byte(js), &graph); err != nil {
		return PNGRequest{}, fmt.Errorf("ComfyUI prompt: %w", err)
	}
	ids := make([]string, 0, len(graph))
	for id := range graph {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		ai, aerr := strconv.Atoi(a)
		bi, berr := strconv.Atoi(b)
		if aerr == nil && berr == nil {
			return ai - bi
		}
		return strings.Compare(a, b)
	})
	var samplers []string
	for _, id := range ids {
		if graph[id].Class == "KSampler" {
			samplers = append(samplers, id)
		}
	}
	if len(samplers) == 0 {
		return PNGRequest{}, fmt.Errorf("ComfyUI prompt: no KSampler node")
	}
	p := comfyParse{graph: graph, read: map[string]bool{}, fields: map[string]bool{}}
	p.req = DefaultRequest()
	p.sampler(samplers[0])
	pr := PNGRequest{Request: p.req, Source: ChunkComfyPrompt, Ignored: p.ignored}
	for _, f := range requestFields {
		if p.fields[f.Name] {
			pr.Fields = append(pr.Fields, f.Name)
		}
	}
	for _, id := range ids {
		switch n := graph[id]; {
		case p.read[id]:
		case n.Class == "VAEDecode", n.Class == "SaveImage", n.Class == "PreviewImage":
		default:
			pr.Ignored = append(pr.Ignored, fmt.Sprintf("node %s (%s)", id, n.Class))
		}
	}
	if err := p.err; err != nil {
		return PNGRequest{}, fmt.Errorf("ComfyUI prompt: %w", err)
	}
	return pr, nil
}

type comfyParse struct {
	graph   map[string]comfyNode
	req     Request
	read    map[string]bool // node ids read
	fields  map[string]bool // request fields set
	ignored []string
	err     error
}

// link returns the node an input links to ("input": ["id", output]).
func (p *comfyParse) link(n comfyNode, input string) (string, comfyNode, bool) {
	var l []json.RawMessage
	if json.Unmarshal(n.Inputs[input], &l) != nil || len(l) != 2 {
		return "", comfyNode{}, false
	}
	var id string
	if json.Unmarshal(l[0], &id) != nil {
		return "", comfyNode{}, false
	}
	target, ok := p.graph[id]
	return id, target, ok
}

// set sets the field from a literal input of node id; an input that is
// missing is skipped, and one that is a link or does not parse is ignored
// (and said).
func (p *comfyParse) set(id string, n comfyNode, input, field string) {
	raw, ok := n.Inputs[input]
	if !ok {
		return
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		var num json.Number
		if json.Unmarshal(raw, &num) != nil {
			p.ignored = append(p.ignored, fmt.Sprintf("%s.%s of node %s (not a value)", n.Class, input, id))
			return
		}
		s = num.String()
	}
	f, _ := FieldByName(field)
	if err := f.Set(&p.req, s); err != nil {
		if p.err == nil {
			p.err = fmt.Errorf("%s.%s of node %s: %w", n.Class, input, id, err)
		}
		return
	}
	p.fields[field] = true
}

func (p *comfyParse) sampler(id string) {
	n := p.graph[id]
	p.read[id] = true
	p.set(id, n, "seed", "seed")
	p.set(id, n, "steps", "steps")
	p.set(id, n, "cfg", "cfg")
	p.set(id, n, "sampler_name", "sampler")
	p.set(id, n, "scheduler", "scheduler")
	p.set(id, n, "denoise", "denoise")
	if p.fields["denoise"] && p.req.Denoise == 1 {
		delete(p.fields, "denoise") // 1 is a run from noise: the default
		p.req.Denoise = 0
	}
	p.text(n, "positive", "prompt")
	p.text(n, "negative", "negative")
	if lid, l, ok := p.link(n, "latent_image"); ok {
		if l.Class == "EmptyLatentImage" {
			p.read[lid] = true
			p.set(lid, l, "width", "width")
			p.set(lid, l, "height", "height")
			p.set(lid, l, "batch_size", "batch")
		} else {
			p.ignored = append(p.ignored, fmt.Sprintf("KSampler.latent_image from node %s (%s): not an empty latent", lid, l.Class))
		}
	}
	// The model: through nodes that pass a model on, to the checkpoint.
	for cur, seen := n, map[string]bool{}; ; {
		mid, m, ok := p.link(cur, "model")
		if !ok || seen[mid] || p.read[mid] {
			break
		}
		seen[mid] = true
		if m.Class == "CheckpointLoaderSimple" {
			p.read[mid] = true
			p.set(mid, m, "ckpt_name", "model")
			break
		}
		cur = m
	}
}

// text reads the prompt of the CLIPTextEncode a KSampler input links to.
func (p *comfyParse) text(n comfyNode, input, field string) {
	tid, t, ok := p.link(n, input)
	if !ok {
		return
	}
	if t.Class != "CLIPTextEncode" {
		p.ignored = append(p.ignored, fmt.Sprintf("KSampler.%s from node %s (%s): not a CLIPTextEncode", input, tid, t.Class))
		return
	}
	p.read[tid] = true
	p.set(tid, t, "text", field)
	if cid, c, ok := p.link(t, "clip"); ok && c.Class == "CLIPSetLastLayer" && !p.read[cid] {
		p.read[cid] = true
		var stop int
		if json.Unmarshal(c.Inputs["stop_at_clip_layer"], &stop) == nil && stop < 0 {
			p.req.ClipSkip = -stop
			p.fields["clip_skip"] = true
		}
	}
}
