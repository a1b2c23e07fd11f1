package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// flagRecipe is a recipe with one flag that ends up in a request field.
const flagRecipe = `package main

import (
	"flag"
	"fmt"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/script/dr"
)

func main() {
	fs := flag.NewFlagSet("mine", flag.ContinueOnError)
	samplers := fs.String("samplers", "euler", "comma-separated samplers")
	dr.Check(fs.Parse(dr.Args()))
	req := engine.DefaultRequest()
	req.Sampler = *samplers
	dr.Check(req.Validate())
	fmt.Println("ok", req.Sampler)
}
`

func writeRecipe(t *testing.T, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mine.go")
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRunRecipeHelp: -h after the recipe prints the recipe's flag usage
// and exits 0 (it exited 1 with "flag: help requested").
func TestRunRecipeHelp(t *testing.T) {
	p := writeRecipe(t, flagRecipe)
	for _, h := range []string{"-h", "--help", "-help"} {
		_, errOut, code := run(t, "run", p, h)
		if code != 0 || strings.Contains(errOut, "help requested") {
			t.Errorf("run %s %s: code %d, stderr %q; want 0 and no 'help requested'", p, h, code, errOut)
		}
	}
}

// TestRunNoFile: `darkroom run` alone says what it needs (it said
// "requires at least 1 arg(s)").
func TestRunNoFile(t *testing.T) {
	_, errOut, code := run(t, "run")
	want := "darkroom run needs a recipe file (a .go file), e.g. darkroom run recipes/seed_sweep.go"
	if code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("run: code %d, stderr %q; want 1 and %q", code, errOut, want)
	}
}

// TestRunRecipeFlagError: a bad value given to a recipe flag is reported
// as that flag of the recipe, not as a request field or a gen flag.
func TestRunRecipeFlagError(t *testing.T) {
	p := writeRecipe(t, flagRecipe)
	for _, args := range [][]string{{"-samplers", "nope"}, {"-samplers=nope"}, {"--samplers", "nope"}} {
		_, errOut, code := run(t, append([]string{"run", p}, args...)...)
		if code != 1 || !strings.Contains(errOut, `recipe flag -samplers: sampler "nope": unknown`) || strings.Contains(errOut, "--sampler ") {
			t.Errorf("run %v: code %d, stderr %q; want the recipe flag -samplers named", args, code, errOut)
		}
	}
	out, _, code := run(t, "run", p, "-samplers", "heun")
	if code != 0 || out != "ok heun\n" {
		t.Errorf("run -samplers heun: code %d, out %q", code, out)
	}
}
