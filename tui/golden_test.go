package tui

import (
	"image/color"
	"testing"

	tea "charm.land/bubbletea/v2"

	"github.com/darkroom-ai/darkroom/termimg"
)

// fakeGPU reports one fixed GPU.
type fakeGPU struct{}

func (fakeGPU) GPUStats() ([]GPUStat, error) {
	return []GPUStat{{Index: 0, Name: "NVIDIA GeForce RTX 4090", MemUsed: 20 << 30, MemTotal: 24 << 30, Util: 97, TempC: 71, PowerW: 402}}, nil
}

var _ GPUStatsProvider = fakeGPU{}

// TestGolden renders every pane in its states at fixed sizes in both
// themes. Regenerate with go test -tags tui ./tui -update.
func TestGolden(t *testing.T) {
	scenarios := []struct {
		name  string
		w, h  int
		gpu   bool
		setup func(h *harness)
	}{
		{"Empty", 80, 24, false, func(h *harness) {}},
		{"Editing", 80, 24, false, func(h *harness) {
			h.typeText("a lighthouse at dusk, volumetric light, 35mm")
			h.keys("tab")
			h.typeText("blurry")
			h.keys("tab", "tab", "right") // sampler → next
		}},
		{"Running", 80, 24, false, func(h *harness) {
			h.fake.gate = make(chan struct{})
			h.fill("a red fox in the snow")
			h.keys("ctrl+g")
			h.fill("a lighthouse at dusk")
			h.keys("ctrl+g")
			h.waitFor("running", func(a *App) bool { return a.running != nil })
			step(h.fake, 3)
			h.waitFor("step 3", func(a *App) bool { return a.running.Step == 3 })
			h.keys("alt+2")
		}},
		{"Failed", 80, 24, false, func(h *harness) {
			h.fill("fail me")
			h.keys("ctrl+g")
			h.fill("fine")
			h.keys("ctrl+g")
			h.waitFor("done", func(a *App) bool { return len(a.done) == 1 })
			h.keys("alt+2")
		}},
		{"History", 80, 24, false, func(h *harness) {
			for _, p := range []string{"one", "two", "three"} {
				h.fill(p)
				h.keys("ctrl+g")
				h.waitFor("done", func(a *App) bool { return a.running == nil && a.inFlight() == 0 })
			}
			h.keys("alt+3", "down")
		}},
		// The options line with the cursor in a word: its hint replaces
		// the key hints.
		{"Options", 80, 24, false, func(h *harness) {
			h.typeText("a lighthouse at dusk")
			h.setOptions("guidance=3.5 init-image=x.png den")
		}},
		// A bad option: the error on the log line, no job queued.
		{"OptionsError", 80, 24, false, func(h *harness) {
			h.typeText("a lighthouse at dusk")
			h.setOptions("init-image=x.png denoise=2")
			h.keys("ctrl+g")
		}},
		{"Help", 80, 24, false, func(h *harness) { h.keys("f1") }},
		{"Picker", 80, 24, false, func(h *harness) { h.keys("ctrl+o", "down") }},
		{"Quit", 80, 24, false, func(h *harness) {
			h.fake.gate = make(chan struct{})
			h.fill("slow")
			h.keys("ctrl+g")
			h.waitFor("running", func(a *App) bool { return a.running != nil })
			h.keys("ctrl+c")
		}},
		{"Script", 80, 24, false, func(h *harness) {
			h.fake.gate = make(chan struct{})
			h.openScript()
			h.eval(scriptRequest)
			h.eval(`fmt.Println("seed", req.Seed)`)
			h.typeText("res, err := generate(ctx, req, nil)")
			h.keys("enter")
			h.waitFor("running", func(a *App) bool { return a.running != nil })
			step(h.fake, 2)
			h.waitFor("step 2", func(a *App) bool { return a.running.Step == 2 })
			h.typeText("len(res.Images)")
		}},
		{"TooSmall", 59, 17, false, func(h *harness) {}},
		// tmux in an 80×24 terminal: the compact layout, not a wall.
		{"Compact", 80, 23, false, func(h *harness) {
			h.typeText("a lighthouse at dusk")
			h.keys("tab")
		}},
		{"Smallest", 60, 18, false, func(h *harness) {
			h.fill("a red fox")
			h.keys("ctrl+g")
			h.waitFor("done", func(a *App) bool { return len(a.done) == 1 })
		}},
		{"SmallestScript", 60, 18, false, func(h *harness) {
			h.openScript()
			h.eval("1+2")
		}},
		{"GPU", 120, 36, true, func(h *harness) {
			h.fill("a cat")
			h.keys("ctrl+g")
			h.waitFor("done", func(a *App) bool { return len(a.done) == 1 })
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			for _, theme := range []string{"Dark", "Light"} {
				t.Run(theme, func(t *testing.T) {
					o := harnessOpts{w: sc.w, h: sc.h, model: "tiny", mode: termimg.ModeHalfblock}
					if sc.gpu {
						o.gpu = fakeGPU{}
					}
					h := newHarness(t, tinyModels(), o)
					if theme == "Light" {
						h.send(tea.BackgroundColorMsg{Color: color.White})
					} else {
						h.send(tea.BackgroundColorMsg{Color: color.Black})
					}
					h.waitFor("devices", func(a *App) bool { return a.devices.valid })
					sc.setup(h)
					h.golden()
				})
			}
		})
	}
}
