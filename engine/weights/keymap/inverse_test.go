package keymap

import "testing"

// TestUNetDiffusersNames inverts DiffusersUNet: every canonical name of the
// SD1.5 UNet and of a two-level UNet without attention on its last level
// maps back to the diffusers name it came from.
func TestUNetDiffusersNames(t *testing.T) {
	for name, c := range map[string]unetConfig{
		"sd15":      {channels: []int{320, 640, 1280, 1280}, attn: []bool{true, true, true, false}, nRes: 2},
		"two-level": {channels: []int{32, 64}, attn: []bool{true, false}, nRes: 2},
		"sdxl-like": {channels: []int{320, 640, 1280}, attn: []bool{false, true, true}, nRes: 2},
	} {
		t.Run(name, func(t *testing.T) {
			renames, err := DiffusersUNet(diffusersUNetNames(c))
			if err != nil {
				t.Fatal(err)
			}
			var canonical []string
			for _, r := range renames {
				canonical = append(canonical, r.To)
			}
			inv := UNetDiffusersNames(canonical)
			for _, r := range renames {
				if got := inv[r.To]; got != r.From {
					t.Errorf("%s -> %q, want %q", r.To, got, r.From)
				}
			}
		})
	}
}
