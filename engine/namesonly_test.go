package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/demo"
)

// TestNamesOnly: under Options.NamesOnly every file a request names is a
// name inside the model directories: paths, "..", and names of files
// outside (in the working directory) are refused with a FieldError naming
// the field; names inside resolve.
func TestNamesOnly(t *testing.T) {
	root := t.TempDir()
	models := filepath.Join(root, "models")
	os.MkdirAll(filepath.Join(models, "checkpoints"), 0o755)
	os.MkdirAll(filepath.Join(models, "vae"), 0o755)
	if err := demo.WriteFile(filepath.Join(models, "checkpoints", "digits2.safetensors")); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(root, "outside.safetensors")
	if err := demo.WriteFile(outside); err != nil {
		t.Fatal(err)
	}
	t.Chdir(root) // "outside.safetensors" exists relative to the working directory
	e, err := Open(Options{Device: "cpu", ModelDirs: []string{models}, NamesOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if p, err := e.Resolve("digits2"); err != nil || p != filepath.Join(models, "checkpoints", "digits2.safetensors") {
		t.Errorf("Resolve(digits2) = %q, %v", p, err)
	}
	if p, err := e.Resolve(""); err != nil || p != DefaultModel {
		t.Errorf("Resolve(\"\") = %q, %v", p, err)
	}
	for _, name := range []string{outside, "outside.safetensors", "outside", "../outside.safetensors", "checkpoints/../../outside.safetensors", "/etc/passwd"} {
		if p, err := e.Resolve(name); err == nil {
			t.Errorf("Resolve(%q) = %q, want an error", name, p)
		}
	}
	for _, tc := range []struct {
		req   Request
		field string
	}{
		{Request{Model: "digits2", VAE: "../outside"}, "vae"},
		{Request{Model: "digits2", VAE: "outside.safetensors"}, "vae"},
		{Request{Model: "digits2", TextEncoders: []string{outside}}, "text_encoders"},
		{Request{Model: "digits2", LoRAs: []string{"../../outside.safetensors:0.5"}}, "loras"},
		{Request{Model: "../outside"}, "model"},
	} {
		_, err := e.LoadRequest(context.Background(), tc.req)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("LoadRequest(%+v): %v, want a FieldError on %s", tc.req, err, tc.field)
		}
	}
	if _, err := e.ResolveUpscaler("../outside.safetensors"); err == nil || !strings.Contains(err.Error(), "not a path") {
		t.Errorf("ResolveUpscaler(../outside.safetensors): %v", err)
	}
	if _, err := e.ResolveUpscaler(outside); err == nil {
		t.Errorf("ResolveUpscaler(%s) resolves", outside)
	}
	for _, m := range e.ListModels() {
		if m.Path == outside {
			t.Errorf("ListModels lists %s", outside)
		}
	}
}
