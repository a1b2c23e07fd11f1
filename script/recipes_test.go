package script

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const tinyModel = "../testdata/reference/sd1-tiny-a/single.safetensors"

// TestRecipes runs every recipe in recipes/ on the tiny test model and
// checks the PNG it writes.
func TestRecipes(t *testing.T) {
	tests := []struct {
		file string
		args []string
		// Size of the written sheet: 64×64 cells, 4 px padding, 11 px
		// captions (Sheet) or 13 px column headers and label-wide row
		// headers (Grid).
		w, h int
	}{
		{"seed_sweep.go", []string{"-seeds", "4", "-cols", "2", "-steps", "4"}, 4 + 2*68, 4 + 2*(64+11+4)},
		// Row header: "dpmpp_2m" is 8×6−1 = 47 px, plus 4 px.
		{"sampler_scheduler_grid.go", []string{"-samplers", "euler,dpmpp_2m", "-schedulers", "normal,karras", "-steps", "4"}, 4 + 51 + 2*68, 4 + 13 + 2*68},
		// Row header: "cfg 5.5" is 7×6−1 = 41 px, plus 4.
		{"cfg_steps_grid.go", []string{"-cfg", "1,5.5", "-steps", "2,4,6"}, 4 + 45 + 3*68, 4 + 13 + 2*68},
		// 2 parts → 4 images, 2 columns, widened to the label "red + at
		// night" (14×6−1 = 83 px).
		{"prompt_matrix.go", []string{"-prompt", "a house|red|at night", "-steps", "3"}, 4 + 2*(83+4), 4 + 2*(64+11+4)},
		// The source and 3 strengths; row header "img2img" (7×6−1 = 41 px, plus 4).
		{"img2img_denoise_grid.go", []string{"-steps", "4"}, 4 + 45 + 4*68, 4 + 13 + 68},
	}
	matches, err := filepath.Glob("../recipes/*.go")
	if err != nil {
		t.Fatal(err)
	}
	if len(matches) != len(tests) {
		t.Errorf("recipes/ has %d recipes, the test covers %d: add the new ones", len(matches), len(tests))
	}
	for _, tc := range tests {
		t.Run(strings.TrimSuffix(tc.file, ".go"), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.png")
			if d := os.Getenv("DARKROOM_RECIPE_OUT"); d != "" {
				out = filepath.Join(d, strings.TrimSuffix(tc.file, ".go")+".png")
			}
			args := append([]string{"-model", tinyModel, "-size", "64", "-out", out}, tc.args...)
			var stdout, stderr bytes.Buffer
			t0 := time.Now()
			err := RunFile(context.Background(), filepath.Join("../recipes", tc.file), args, Options{Stdout: &stdout, Stderr: &stderr})
			if err != nil {
				t.Fatalf("RunFile: %v\nstderr: %s", err, stderr.String())
			}
			t.Logf("%s: %v", tc.file, time.Since(t0))
			f, err := os.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			img, err := png.Decode(f)
			if err != nil {
				t.Fatal(err)
			}
			if got := img.Bounds().Size(); got != image.Pt(tc.w, tc.h) {
				t.Errorf("sheet size %v, want %dx%d", got, tc.w, tc.h)
			}
			if !strings.Contains(stdout.String(), "wrote "+out) {
				t.Errorf("stdout %q lacks the wrote line", stdout.String())
			}
			// The cells hold generated images, not background: the pixel
			// at the centre of the first cell differs from the padding.
			bg := img.At(1, 1)
			var x, y int
			if strings.Contains(tc.file, "grid") {
				x, y = tc.w-4-32, tc.h-4-32 // last cell
			} else {
				x, y = 4+32, 4+32
			}
			if img.At(x, y) == bg {
				t.Errorf("cell pixel (%d,%d) equals the background", x, y)
			}
			// The recipe is valid Go for the compiler too.
			if !testing.Short() {
				goTool := goCommand(t)
				if b, err := exec.Command(goTool, "vet", filepath.Join("../recipes", tc.file)).CombinedOutput(); err != nil {
					t.Errorf("go vet %s: %v\n%s", tc.file, err, b)
				}
			}
		})
	}
}
