package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/internal/testref"
)

// fixtureCases reads the cases of a reference fixture's cases.json
// (testdata/reference/<dir>, as the tools/reference scripts write it),
// skipping the test without it; the script's own failures fail it.
func fixtureCases[C any](t *testing.T, dir string) []C {
	t.Helper()
	if !testref.Exists(dir, "cases.json") {
		t.Skipf("no %s fixtures", dir)
	}
	b, err := os.ReadFile(testref.Path(dir, "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases    []C      `json:"cases"`
		Failures []string `json:"failures"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Cases) == 0 || len(doc.Failures) > 0 {
		t.Fatalf("%s/cases.json: %d cases, failures %v", dir, len(doc.Cases), doc.Failures)
	}
	return doc.Cases
}

// checkStepsAndImage generates req on m, compares the latent after each of
// its steps with fx[stepKey(i)] (relative error ≤ tol) and returns the
// decoded image's PSNR against fx[imageKey] ([n, H, W, 3]).
func checkStepsAndImage(t *testing.T, m *Model, req Request, fx map[string][]float32, stepKey func(i int) string, imageKey string, tol float64) float64 {
	t.Helper()
	ctx := context.Background()
	var steps [][]float32
	res, err := m.Generate(ctx, req, func(ev Event) {
		if ev.Phase == PhaseSample {
			steps = append(steps, ev.Latent)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != req.Steps {
		t.Fatalf("%d steps, want %d", len(steps), req.Steps)
	}
	for i, s := range steps {
		check(t, fmt.Sprintf("latents_%d", i), s, fx[stepKey(i)], tol)
	}
	pix, err := m.Decode(ctx, res.Latents, res.LatentShape)
	if err != nil {
		t.Fatal(err)
	}
	return testref.PSNR(batchToHWC(pix, req.Batch, req.Height, req.Width), fx[imageKey])
}
