package engine

import "testing"

// The A1111 text is what A1111Parameters wrote before the field table,
// byte for byte.
func TestA1111ParametersGolden(t *testing.T) {
	d := DefaultRequest()
	full := Request{Model: "/m/x.safetensors", Prompt: "a cat, (fluffy:1.2)\nline two", Negative: "blurry", Seed: 18446744073709551615,
		Steps: 33, CFG: 5.5, Sampler: "dpmpp_2m", Scheduler: "karras", Width: 640, Height: 384, Batch: 3, ClipSkip: 2}
	odd := d
	odd.Sampler, odd.Scheduler, odd.CFG, odd.ClipSkip, odd.Prompt = "my_sampler", "my_sched", 1e-7, 0, ""
	for _, c := range []struct {
		name      string
		req       Request
		hash, mdl string
		want      string
	}{
		{"defaults", d, "", "", "\nSteps: 20, Sampler: Euler, Schedule type: Normal, CFG scale: 7, Seed: 0, Size: 512x512, Version: darkroom"},
		{"full", full, "0123456789", "x, v1\nb", "a cat, (fluffy:1.2)\nline two\nNegative prompt: blurry\nSteps: 33, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5.5, Seed: 18446744073709551615, Size: 640x384, Model hash: 0123456789, Model: x  v1 b, Clip skip: 2, Version: darkroom"},
		{"name only", d, "", "single", "\nSteps: 20, Sampler: Euler, Schedule type: Normal, CFG scale: 7, Seed: 0, Size: 512x512, Model: single, Version: darkroom"},
		{"hash only", d, "abc", "", "\nSteps: 20, Sampler: Euler, Schedule type: Normal, CFG scale: 7, Seed: 0, Size: 512x512, Model hash: abc, Version: darkroom"},
		{"unknown names", odd, "", "", "\nSteps: 20, Sampler: my_sampler, Schedule type: my_sched, CFG scale: 1e-07, Seed: 0, Size: 512x512, Version: darkroom"},
	} {
		if got := A1111Parameters(c.req, c.hash, c.mdl); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

// The A1111 names map back to one sampler and one scheduler each.
func TestA1111NamesUnique(t *testing.T) {
	for _, names := range []map[string]string{a1111Samplers, a1111Schedules} {
		seen := map[string]string{}
		for v, n := range names {
			if other, ok := seen[n]; ok {
				t.Errorf("A1111 name %q for both %s and %s", n, v, other)
			}
			seen[n] = v
		}
	}
}
