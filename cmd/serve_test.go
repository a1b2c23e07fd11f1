package cmd

import (
	"strings"
	"testing"
)

// TestServeFlags: `darkroom serve` refuses to listen beyond loopback
// without a token, and bad tokens and limits, with one line naming the
// flag.
func TestServeFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--listen", "0.0.0.0:7860"}, "--listen 0.0.0.0:7860: not a loopback address, so a --token is required"},
		{[]string{"serve", "--listen", ":7860"}, "a --token is required"},
		{[]string{"serve", "--token", "alice:"}, `--token "alice:": want NAME:SECRET or SECRET`},
		{[]string{"serve", "--token", "alice:short"}, "--token alice: the secret is shorter than 8 characters"},
		{[]string{"serve", "--queue", "0"}, "--queue 0: want a positive number"},
		{[]string{"serve", "--device", "tpu", "--listen", "127.0.0.1:0"}, `--device "tpu": want auto, cpu, cuda or cuda:N`},
	} {
		_, stderr, code := run(t, tc.args...)
		if code != 1 || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
			t.Errorf("darkroom %s: exit %d, stderr %q, want %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
	}
}
