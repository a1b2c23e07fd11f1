package engine

import (
	"testing"
)

// Other UIs' sampler names map to ComfyUI's; A1111's older names carry
// the scheduler.
func TestCanonicalSampler(t *testing.T) {
	for _, c := range []struct {
		in, sampler, scheduler string
		ok                     bool
	}{
		{"euler", "euler", "", true},
		{"Euler", "euler", "", true},
		{"Euler a", "euler_ancestral", "", true},
		{"euler_a", "euler_ancestral", "", true},
		{"k_euler_a", "euler_ancestral", "", true},
		{"k_lms", "lms", "", true},
		{"DPM++ 2M", "dpmpp_2m", "", true},
		{"dpm++2m", "dpmpp_2m", "", true},
		{"dpm++2s_a", "dpmpp_2s_ancestral", "", true},
		{"dpm2", "dpm_2", "", true},
		{"DPM2 a", "dpm_2_ancestral", "", true},
		{"k_dpm_2_a", "dpm_2_ancestral", "", true},
		{"DPM++ 2M SDE Heun", "dpmpp_2m_sde_heun", "", true},
		{"UniPC", "uni_pc", "", true},
		{"ipndm_v", "ipndm_v", "", true},
		{"DPM++ 2M Karras", "dpmpp_2m", "karras", true},
		{"DPM++ 2M SDE Exponential", "dpmpp_2m_sde", "exponential", true},
		{"Euler a SGM Uniform", "euler_ancestral", "sgm_uniform", true},
		{"k_dpmpp_2m_karras", "dpmpp_2m", "karras", true},
		{"DDIM", "ddim", "", true},
		{"Karras", "", "", false},
		{"nope", "", "", false},
		{"", "", "", false},
	} {
		s, sch, ok := CanonicalSampler(c.in)
		if s != c.sampler || sch != c.scheduler || ok != c.ok {
			t.Errorf("CanonicalSampler(%q) = %q, %q, %v; want %q, %q, %v", c.in, s, sch, ok, c.sampler, c.scheduler, c.ok)
		}
	}
}

func TestCanonicalScheduler(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"karras", "karras", true},
		{"Karras", "karras", true},
		{"Exponential", "exponential", true},
		{"SGM Uniform", "sgm_uniform", true},
		{"sgm_uniform", "sgm_uniform", true},
		{"KL Optimal", "kl_optimal", true},
		{"DDIM", "ddim_uniform", true},
		{"Automatic", "", false},
		{"euler", "", false},
	} {
		got, ok := CanonicalScheduler(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("CanonicalScheduler(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// Every accepted spelling normalises to one name only.
func TestNameKeysUnique(t *testing.T) {
	for _, tab := range []*nameTable{samplerNames, schedulerNames} {
		seen := map[string]string{}
		for _, sp := range tab.spellings {
			c, _ := tab.lookup(sp)
			if other, ok := seen[nameKey(sp)]; ok && other != c {
				t.Errorf("%q normalises to %q for both %s and %s", sp, nameKey(sp), c, other)
			}
			seen[nameKey(sp)] = c
		}
	}
}

// The field table stores canonical names from any spelling and an unknown
// name is refused with the nearest spelling, when one is near.
func TestSamplerFieldAliases(t *testing.T) {
	sampler, _ := FieldByName("sampler")
	scheduler, _ := FieldByName("scheduler")
	const samplers = "ddim, ddpm, deis, dpm_2, dpm_2_ancestral, dpmpp_2m, dpmpp_2m_sde, dpmpp_2m_sde_heun, dpmpp_2s_ancestral, dpmpp_3m_sde, dpmpp_sde, euler, euler_ancestral, heun, ipndm, ipndm_v, lcm, lms, uni_pc, uni_pc_bh2"
	const schedulers = "beta, ddim_uniform, exponential, karras, kl_optimal, linear_quadratic, normal, sgm_uniform, simple"
	for _, c := range []struct {
		field             RequestField
		in                string
		sampler, schedule string
		err               string
	}{
		{sampler, "Euler a", "euler_ancestral", "normal", ""},
		{sampler, "DPM++ 2M Karras", "dpmpp_2m", "karras", ""},
		{scheduler, "SGM Uniform", "euler", "sgm_uniform", ""},
		{sampler, "eulr_a", "eulr_a", "normal", `sampler "eulr_a": unknown; did you mean "euler_a" (euler_ancestral)? valid: ` + samplers},
		{sampler, "dpmpp_2n", "dpmpp_2n", "normal", `sampler "dpmpp_2n": unknown; did you mean "dpmpp_2m"? valid: ` + samplers},
		{sampler, "nope", "nope", "normal", `sampler "nope": unknown; valid: ` + samplers},
		{scheduler, "Karrass", "euler", "Karrass", `scheduler "Karrass": unknown; did you mean "Karras" (karras)? valid: ` + schedulers},
	} {
		r := DefaultRequest()
		if err := c.field.Set(&r, c.in); err != nil {
			t.Fatalf("%s %q: %v", c.field.Name, c.in, err)
		}
		if r.Sampler != c.sampler || r.Scheduler != c.schedule {
			t.Errorf("%s %q: sampler %q scheduler %q; want %q %q", c.field.Name, c.in, r.Sampler, r.Scheduler, c.sampler, c.schedule)
		}
		err := r.Validate()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != c.err {
			t.Errorf("%s %q: error\n %q\nwant %q", c.field.Name, c.in, got, c.err)
		}
	}
}

// A1111 text names samplers and schedulers as A1111 does; older A1111
// text puts the scheduler in the sampler's name; "Automatic" keeps it.
func TestParseA1111SamplerNames(t *testing.T) {
	for _, c := range []struct {
		settings, sampler, scheduler string
	}{
		{"Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7", "euler_ancestral", "karras"},
		{"Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7", "dpmpp_2m", "karras"},
		{"Steps: 20, Sampler: DPM++ 2M Karras, Schedule type: Exponential, CFG scale: 7", "dpmpp_2m", "exponential"},
		{"Steps: 20, Sampler: DPM++ SDE, Schedule type: Automatic, CFG scale: 7", "dpmpp_sde", "normal"},
		{"Steps: 20, Sampler: euler, Schedule type: sgm_uniform, CFG scale: 7", "euler", "sgm_uniform"},
	} {
		req, _, err := ParseA1111Parameters("a cat\n" + c.settings)
		if err != nil {
			t.Fatalf("%s: %v", c.settings, err)
		}
		if req.Sampler != c.sampler || req.Scheduler != c.scheduler {
			t.Errorf("%s: sampler %q scheduler %q; want %q %q", c.settings, req.Sampler, req.Scheduler, c.sampler, c.scheduler)
		}
	}
}

// TestValidateCanonicalisesNames: a script that sets another UI's spelling
// directly gets ComfyUI's name after Validate, as a flag would give it.
func TestValidateCanonicalisesNames(t *testing.T) {
	r := DefaultRequest()
	r.Sampler, r.Scheduler = "Euler a", "Karras"
	if err := r.Validate(); err != nil || r.Sampler != "euler_ancestral" || r.Scheduler != "karras" {
		t.Errorf("Validate: %v, sampler %q scheduler %q", err, r.Sampler, r.Scheduler)
	}
}
