package engine

import (
	"strings"
	"testing"
)

// TestOpenOptions covers the device and precision options on a CPU
// machine (and on any machine for the explicit CPU device).
func TestOpenOptions(t *testing.T) {
	for _, c := range []struct {
		name       string
		opts       Options
		err        string // substring of Open's error, or ""
		notice     string // substring of Notice, or "" for none
		noticeNone bool
	}{
		{name: "cpu", opts: Options{Device: "cpu"}, noticeNone: true},
		{name: "cpu fp32", opts: Options{Device: "cpu", Precision: "fp32"}, noticeNone: true},
		{name: "cpu fp16", opts: Options{Device: "cpu", Precision: "fp16"}, notice: "--precision fp16 applies to the GPU; the CPU computes in float32"},
		{name: "cpu bf16", opts: Options{Device: "cpu", Precision: "bf16"}, notice: "--precision bf16 applies to the GPU"},
		{name: "bad precision", opts: Options{Device: "cpu", Precision: "fp8"}, err: `--precision "fp8": want auto, fp16, bf16 or fp32`},
		{name: "bad device", opts: Options{Device: "tpu"}, err: `--device "tpu": want auto, cpu or cuda`},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, err := Open(c.opts)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			if c.noticeNone && e.Notice != "" {
				t.Errorf("notice %q, want none", e.Notice)
			}
			if c.notice != "" && !strings.Contains(e.Notice, c.notice) {
				t.Errorf("notice %q, want one containing %q", e.Notice, c.notice)
			}
		})
	}
}
