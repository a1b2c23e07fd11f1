package hub

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/hub/hubtest"
)

// TestPullCivitai: the primary .safetensors file of a version is fetched
// through the redirect to storage, checked against the API's sha256 and
// written into the model folder (a VAE into vae/); the API key goes to
// CivitAI only, the Hugging Face token never; a missing key is explained;
// a partial file resumes; a wrong sha256 leaves nothing; LoRAs are
// refused.
func TestPullCivitai(t *testing.T) {
	ckpt := weights(4000, 11)
	c := hubtest.NewCivitai(t, map[string]*hubtest.CivitaiVersion{
		"7":  {Type: "Checkpoint", Name: "dreamy_v1.safetensors", Body: ckpt, Token: "cv_key"},
		"9":  {Type: "VAE", Name: "vae-ft-mse.safetensors", Body: weights(900, 12)},
		"10": {Type: "Checkpoint", Name: "bad.safetensors", Body: weights(900, 13), SHA256: strings.Repeat("ab", 32)},
		"11": {Type: "LORA", Name: "style.safetensors", Body: weights(10, 14)},
	})
	t.Setenv("HF_TOKEN", "hf_never_to_civitai")
	dir := t.TempDir()
	ctx := context.Background()

	_, err := PullCivitai(ctx, c.URL(), "", "7", dir, nil)
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "CIVITAI_TOKEN") {
		t.Errorf("no key: %v", err)
	}
	for _, a := range c.APIAuth() {
		if a != "" {
			t.Errorf("CivitAI was sent %q without a key", a)
		}
	}

	// A partial file from an earlier attempt is resumed.
	dest := filepath.Join(dir, "dreamy_v1.safetensors")
	if err := os.WriteFile(dest+".incomplete", ckpt[:1500], 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := PullCivitai(ctx, c.URL(), "cv_key", "7", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.Path != dest || f.Type != "Checkpoint" || f.Cached {
		t.Errorf("got %+v", f)
	}
	if b, err := os.ReadFile(dest); err != nil || string(b) != string(ckpt) {
		t.Errorf("contents differ (%v)", err)
	}
	if r := c.Ranges(); len(r) != 1 || r[0] != "bytes=1500-" {
		t.Errorf("storage saw ranges %q, want one bytes=1500-", r)
	}
	for _, a := range c.StorageAuth() {
		if a != "" {
			t.Errorf("storage was sent Authorization %q", a)
		}
	}
	if auth := c.APIAuth(); auth[len(auth)-1] != "Bearer cv_key" {
		t.Errorf("download request sent %q", auth[len(auth)-1])
	}
	if f, err := PullCivitai(ctx, c.URL(), "cv_key", "7", dir, nil); err != nil || !f.Cached {
		t.Errorf("second pull: %+v, %v", f, err)
	}

	if f, err := PullCivitai(ctx, c.URL(), "", "9", dir, nil); err != nil || f.Path != filepath.Join(dir, "vae", "vae-ft-mse.safetensors") {
		t.Errorf("VAE: %+v, %v", f, err)
	}
	if _, err := PullCivitai(ctx, c.URL(), "", "10", dir, nil); !errors.Is(err, ErrChecksum) {
		t.Errorf("bad sha256: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "bad.safetensors*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if _, err := PullCivitai(ctx, c.URL(), "", "11", dir, nil); err == nil || !strings.Contains(err.Error(), "LORA") {
		t.Errorf("LoRA: %v", err)
	}
	if _, err := PullCivitai(ctx, c.URL(), "", "12x", dir, nil); err == nil || !strings.Contains(err.Error(), "version id") {
		t.Errorf("bad id: %v", err)
	}
}
