// Package family is the seam where every model family plugs in: a registry
// of families (each registers itself from its own folder under
// engine/families, as ollama's model.Register and ComfyUI's
// supported_models descriptors do), the probe input they read (Keys), and
// the component interfaces one generic pipeline drives: a text
// Conditioner, a Denoiser (UNet or transformer), a VAE with its
// LatentFormat, the family's ModelSampling and its Defaults.
//
// The package knows no family. It imports only the layers below it
// (tensor, backend, weights, sampling); families import it, and the engine
// imports the families through one blank-import list
// (engine/families/all).
package family

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Family is one model architecture family: it recognises its checkpoints
// and loads them into components.
type Family interface {
	// Name is the family's display name ("SD1.x", "SDXL", "Flux.1").
	Name() string
	// Probe reports whether the keys belong to this family, with the
	// evidence that decided it. Probes are independent of each other:
	// Detect runs all of them and refuses to guess when several match.
	Probe(k *Keys) (Detection, bool)
	// Load builds the family's components from src on env's device. A
	// family that darkroom recognises but cannot run yet returns an error
	// matching ErrNotSupported.
	Load(ctx context.Context, src *Source, env Env) (*Components, error)
}

// ErrNotSupported is matched (errors.Is) by the load errors of families
// that are recognised but not runnable yet.
var ErrNotSupported = errors.New("not supported yet")

// ErrUnknown is matched by Detect's error when no family claims a model.
var ErrUnknown = errors.New("unknown model family")

// Detection is what a probe found.
type Detection struct {
	// Family is the family's Name.
	Family string
	// Variant narrows it down where the family has several ("v-prediction",
	// "refiner", "dev", "schnell", "3.5 Large"); empty otherwise.
	Variant string
	// Evidence lists what decided, most decisive first: `key "…"`,
	// `metadata modelspec.architecture="…"`, `model_index.json
	// _class_name="…"`, `shape […]`.
	Evidence []string
	// Runnable is false for families that are recognised only.
	Runnable bool
}

// Name is the family with its variant, e.g. "SD2.x (v-prediction)".
func (d Detection) Name() string {
	if d.Variant == "" {
		return d.Family
	}
	return d.Family + " (" + d.Variant + ")"
}

// String describes the detection, e.g.
// `SDXL (found key "conditioner.embedders.1.model.ln_final.weight")`.
func (d Detection) String() string {
	if len(d.Evidence) == 0 {
		return d.Name()
	}
	return fmt.Sprintf("%s (found %s)", d.Name(), strings.Join(d.Evidence, ", "))
}

// Key returns a piece of evidence naming a tensor: `key "name"`.
func Key(name string) string { return fmt.Sprintf("key %q", name) }

// Meta returns a piece of evidence naming a metadata entry.
func Meta(key, value string) string { return fmt.Sprintf("metadata %s=%q", key, value) }

// registry holds the registered families. It is written only by init
// functions (Register) and read afterwards.
var registry struct {
	mu       sync.RWMutex
	families []Family
}

// Register adds a family. It is called from the init function of the
// family's package; registering two families of one name panics (a
// programming error).
func Register(f Family) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	for _, g := range registry.families {
		if g.Name() == f.Name() {
			panic("family: " + f.Name() + " registered twice")
		}
	}
	registry.families = append(registry.families, f)
}

// Families returns the registered families, sorted by name.
func Families() []Family {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	out := slices.Clone(registry.families)
	slices.SortFunc(out, func(a, b Family) int { return strings.Compare(a.Name(), b.Name()) })
	return out
}

// Lookup returns the registered family of that name.
func Lookup(name string) (Family, bool) {
	for _, f := range Families() {
		if f.Name() == name {
			return f, true
		}
	}
	return nil, false
}

// Detect runs every family's probe over k. Exactly one must match: with
// none, the error (matching ErrUnknown) names what was found; with several
// it lists them (a bug in the probes, which a test guards against).
func Detect(k *Keys) (Family, Detection, error) {
	type hit struct {
		f Family
		d Detection
	}
	var hits []hit
	for _, f := range Families() {
		if d, ok := f.Probe(k); ok {
			if d.Family == "" {
				d.Family = f.Name()
			}
			hits = append(hits, hit{f, d})
		}
	}
	switch len(hits) {
	case 1:
		d := hits[0].d
		// The file's own statement of its architecture and a diffusers
		// folder's pipeline class, when there are, are reported beside the
		// keys that decided.
		if a := k.Meta("modelspec.architecture"); a != "" {
			d.Evidence = append(d.Evidence, Meta("modelspec.architecture", a))
		}
		if k.Pipeline() != "" {
			d.Evidence = append(d.Evidence, k.PipelineEvidence())
		}
		return hits[0].f, d, nil
	case 0:
		return nil, Detection{}, fmt.Errorf("%w: %s", ErrUnknown, k.Summary())
	}
	parts := make([]string, len(hits))
	for i, h := range hits {
		parts[i] = h.d.String()
	}
	return nil, Detection{}, fmt.Errorf("ambiguous model: it matches %s", strings.Join(parts, " and "))
}

// NotSupported is the load error of a recognised family that is not
// runnable yet: "recognised as X (found …); X is not supported yet".
func NotSupported(d Detection) error {
	return fmt.Errorf("recognised as %s; %s is %w", d.String(), d.Family, ErrNotSupported)
}

// Recognised is a family darkroom recognises but cannot run yet: its
// folder registers one with its probe, and Load refuses with
// NotSupported. When the family becomes runnable, the folder replaces it
// with a real implementation.
type Recognised struct {
	// FamilyName is the family's Name.
	FamilyName string
	// Match is the probe; the Detection it returns needs no Family.
	Match func(k *Keys) (Detection, bool)
}

// Name returns the family's name.
func (r Recognised) Name() string { return r.FamilyName }

// Probe runs Match and marks the detection not runnable.
func (r Recognised) Probe(k *Keys) (Detection, bool) {
	d, ok := r.Match(k)
	if !ok {
		return Detection{}, false
	}
	d.Family, d.Runnable = r.FamilyName, false
	return d, true
}

// Load refuses: the family is recognised only. The message carries the
// detection's evidence (env.Detection, as Detect reported it, or the
// probe's own).
func (r Recognised) Load(_ context.Context, src *Source, env Env) (*Components, error) {
	d := env.Detection
	if d.Family != r.FamilyName {
		d, _ = r.Probe(src.Keys())
		d.Family = r.FamilyName
	}
	return nil, NotSupported(d)
}
