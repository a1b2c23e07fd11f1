package pth

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzFromBytes checks that the reader never panics or hangs on arbitrary
// bytes, that a refusal is an ErrFormat or ErrUnsafe line, and that every
// tensor of whatever it accepts can be read in full.
func FuzzFromBytes(f *testing.F) {
	f.Add(handMade(f))
	for _, name := range []string{"benign.pth", "benign_p4.pth", "benign_legacy.pth", "evil_system.pth", "evil_inst.pth"} {
		if b, err := os.ReadFile(filepath.Join(fixtures(), name)); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("(Vecho pwned\nios\nsystem\n."))
	f.Add([]byte{0x80, 2, '}', 'q', 0, 'h', 0, 'h', 0, 's', '.'})
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, err := FromBytes("fuzz.pth", data)
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsafe) {
				t.Fatalf("error %v is neither ErrFormat nor ErrUnsafe", err)
			}
			return
		}
		defer pf.Close()
		for _, name := range pf.Names() {
			info, ok := pf.Info(name)
			if !ok {
				t.Fatalf("Info(%q) missing for a listed name", name)
			}
			if info.Size > 1<<20 {
				continue // bound the work per input
			}
			raw, err := pf.Raw(name)
			if err != nil {
				t.Fatalf("Raw(%q): %v", name, err)
			}
			if int64(len(raw)) != info.Size {
				t.Fatalf("Raw(%q) has %d bytes, Info says %d", name, len(raw), info.Size)
			}
			if _, err := pf.Float32(name); err != nil {
				t.Fatalf("Float32(%q): %v", name, err)
			}
		}
	})
}
