package keymap

import (
	"strings"
	"testing"
)

func TestUpscaler(t *testing.T) {
	cases := []struct {
		name string
		in   []string
		want map[string]string // from → to; unlisted names keep their own
	}{
		{"old x4", []string{"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight", "model.1.sub.0.RDB3.conv5.0.bias", "model.1.sub.1.weight", "model.3.weight", "model.6.bias", "model.8.weight", "model.10.weight"},
			map[string]string{"model.0.weight": "conv_first.weight", "model.1.sub.0.RDB1.conv1.0.weight": "body.0.rdb1.conv1.weight", "model.1.sub.0.RDB3.conv5.0.bias": "body.0.rdb3.conv5.bias",
				"model.1.sub.1.weight": "conv_body.weight", "model.3.weight": "conv_up1.weight", "model.6.bias": "conv_up2.bias", "model.8.weight": "conv_hr.weight", "model.10.weight": "conv_last.weight"}},
		{"old x2", []string{"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight", "model.3.weight", "model.5.weight", "model.7.weight"},
			map[string]string{"model.0.weight": "conv_first.weight", "model.1.sub.0.RDB1.conv1.0.weight": "body.0.rdb1.conv1.weight", "model.3.weight": "conv_up1.weight", "model.5.weight": "conv_hr.weight", "model.7.weight": "conv_last.weight"}},
		{"bsrgan", []string{"conv_first.weight", "RRDB_trunk.2.RDB1.conv3.weight", "trunk_conv.bias", "upconv2.weight", "HRconv.weight", "conv_last.weight"},
			map[string]string{"RRDB_trunk.2.RDB1.conv3.weight": "body.2.rdb1.conv3.weight", "trunk_conv.bias": "conv_body.bias", "upconv2.weight": "conv_up2.weight", "HRconv.weight": "conv_hr.weight"}},
		{"module. prefix", []string{"module.body.0.weight", "module.body.1.weight"},
			map[string]string{"module.body.0.weight": "body.0.weight", "module.body.1.weight": "body.1.weight"}},
	}
	for _, c := range cases {
		rs, err := Upscaler(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(rs) != len(c.in) {
			t.Fatalf("%s: %d renames for %d names", c.name, len(rs), len(c.in))
		}
		for _, r := range rs {
			want, ok := c.want[r.From]
			if !ok {
				want = r.From
			}
			if r.To != want {
				t.Errorf("%s: %q → %q, want %q", c.name, r.From, r.To, want)
			}
		}
	}
	if _, err := Upscaler([]string{"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight", "model.5.weight"}); err == nil || !strings.Contains(err.Error(), "model.5") {
		t.Errorf("odd old layout: %v", err)
	}
}
