package engine

import (
	"fmt"
	"slices"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/sampling"
)

// Sampler and scheduler names. A request stores ComfyUI's names
// ("euler_ancestral", "karras"); CanonicalSampler and CanonicalScheduler
// also accept the names A1111 ("Euler a", "DPM++ 2M Karras"), the older
// k-diffusion UIs ("k_euler_a") and stable-diffusion.cpp ("euler_a",
// "dpm++2m") give them. Names are compared ignoring case, spaces, '_' and
// '-', with "++" read as "pp" and a leading "k_" dropped.

// a1111Samplers are A1111's names of the samplers, written to and read from
// A1111 parameters text.
var a1111Samplers = map[string]string{
	"euler": "Euler", "euler_ancestral": "Euler a", "heun": "Heun", "dpm_2": "DPM2",
	"dpm_2_ancestral": "DPM2 a", "lms": "LMS", "dpmpp_2s_ancestral": "DPM++ 2S a",
	"dpmpp_2m": "DPM++ 2M", "dpmpp_sde": "DPM++ SDE", "dpmpp_2m_sde": "DPM++ 2M SDE",
	"dpmpp_3m_sde": "DPM++ 3M SDE", "ddim": "DDIM", "lcm": "LCM", "uni_pc": "UniPC",
	"ipndm": "IPNDM", "deis": "DEIS", "ddpm": "DDPM", "dpmpp_2m_sde_heun": "DPM++ 2M SDE Heun",
	"ipndm_v": "IPNDM_V", "uni_pc_bh2": "UniPC BH2",
}

// a1111Schedules are A1111's names of the schedulers ("Schedule type").
var a1111Schedules = map[string]string{
	"normal": "Normal", "karras": "Karras", "exponential": "Exponential", "sgm_uniform": "SGM Uniform",
	"simple": "Simple", "ddim_uniform": "DDIM", "beta": "Beta", "kl_optimal": "KL Optimal",
	"linear_quadratic": "Linear Quadratic",
}

// A1111SamplerName returns A1111's name of a sampler ("euler_ancestral":
// "Euler a"), or the name itself when A1111 has none.
func A1111SamplerName(sampler string) string {
	if n, ok := a1111Samplers[sampler]; ok {
		return n
	}
	return sampler
}

// A1111SchedulerName returns A1111's name of a scheduler ("karras":
// "Karras"), or the name itself when A1111 has none.
func A1111SchedulerName(scheduler string) string {
	if n, ok := a1111Schedules[scheduler]; ok {
		return n
	}
	return scheduler
}

// samplerAliases are other UIs' spellings of the samplers. Normalised,
// most are A1111's names ("euler_a" is "Euler a"); they are listed so that
// "did you mean" can suggest them as users type them.
var samplerAliases = map[string]string{
	"euler_a":    "euler_ancestral", // stable-diffusion.cpp, k-diffusion UIs
	"dpm_2_a":    "dpm_2_ancestral", // k_dpm_2_a
	"dpm2_a":     "dpm_2_ancestral",
	"dpmpp_2s_a": "dpmpp_2s_ancestral", // k_dpmpp_2s_a
	"dpm++2s_a":  "dpmpp_2s_ancestral", // stable-diffusion.cpp
	"unipc":      "uni_pc",
}

// nameTable maps normalised names to canonical ones.
type nameTable struct {
	canonical []string
	byKey     map[string]string
	spellings []string // every accepted spelling, for "did you mean"
}

func newNameTable(canonical []string, a1111, aliases map[string]string) *nameTable {
	t := &nameTable{canonical: canonical, byKey: map[string]string{}}
	add := func(spelling, name string) {
		t.byKey[nameKey(spelling)] = name
		t.spellings = append(t.spellings, spelling)
	}
	for _, n := range canonical {
		add(n, n)
	}
	for n, a := range a1111 {
		if slices.Contains(canonical, n) {
			add(a, n)
		}
	}
	for a, n := range aliases {
		add(a, n)
	}
	slices.Sort(t.spellings)
	return t
}

var (
	samplerNames   = newNameTable(sampling.Samplers(), a1111Samplers, samplerAliases)
	schedulerNames = newNameTable(sampling.Schedulers(), a1111Schedules, nil)
)

// nameKey normalises a name: lower case, "++" as "pp", no leading "k_",
// no spaces, '_', '-' or '.'.
func nameKey(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimPrefix(s, "k_")
	s = strings.ReplaceAll(s, "++", "pp")
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '_', '-', '.':
			return -1
		}
		return r
	}, s)
}

func (t *nameTable) lookup(s string) (string, bool) {
	n, ok := t.byKey[nameKey(s)]
	return n, ok
}

// CanonicalSampler returns the ComfyUI name of a sampler named as ComfyUI,
// A1111, stable-diffusion.cpp or the k-diffusion UIs name it. A name in
// A1111's older style, a sampler followed by a scheduler ("DPM++ 2M
// Karras", "Euler a SGM Uniform"), gives the scheduler too; otherwise
// scheduler is "". ok is false for an unknown name.
func CanonicalSampler(name string) (sampler, scheduler string, ok bool) {
	if s, ok := samplerNames.lookup(name); ok {
		return s, "", true
	}
	words := strings.FieldsFunc(name, func(r rune) bool { return r == ' ' || r == '_' })
	for n := 1; n <= 2 && n < len(words); n++ {
		sched, ok := schedulerNames.lookup(strings.Join(words[len(words)-n:], "_"))
		if !ok {
			continue
		}
		if s, ok := samplerNames.lookup(strings.Join(words[:len(words)-n], "_")); ok {
			return s, sched, true
		}
	}
	return "", "", false
}

// CanonicalScheduler returns the ComfyUI name of a scheduler named as
// ComfyUI or A1111 name it ("Karras", "SGM Uniform"); ok is false for an
// unknown name.
func CanonicalScheduler(name string) (string, bool) { return schedulerNames.lookup(name) }

// unknownName is the message for a name that is none of t's: the closest
// accepted spelling, when one is close, and the canonical names.
func (t *nameTable) unknownName(s string) string {
	msg := "unknown; "
	if near := t.nearest(s); near != "" {
		canon, _ := t.lookup(near)
		if canon != near {
			msg += fmt.Sprintf("did you mean %q (%s)? ", near, canon)
		} else {
			msg += fmt.Sprintf("did you mean %q? ", near)
		}
	}
	return msg + "valid: " + strings.Join(t.canonical, ", ")
}

// nearest returns the accepted spelling closest to s in edit distance
// (ignoring case), or "" when none is within a third of its length (at
// least 1, at most 3 edits).
func (t *nameTable) nearest(s string) string {
	ls := strings.ToLower(strings.TrimSpace(s))
	limit := min(max(len(ls)/3, 1), 3)
	best, bestD := "", limit+1
	for _, sp := range t.spellings {
		if d := editDistance(ls, strings.ToLower(sp)); d < bestD {
			best, bestD = sp, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
