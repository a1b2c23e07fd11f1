package keymap

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Upscaler names: the canonical names of RRDBNet (ESRGAN, Real-ESRGAN)
// are basicsr's (conv_first, body.N.rdbK.convJ, conv_body, conv_upK,
// conv_hr, conv_last); SRVGGNetCompact keeps its own (body.N).
var (
	esrganOldRDB  = regexp.MustCompile(`^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$`)
	esrganOldBody = regexp.MustCompile(`^model\.1\.sub\.(\d+)\.(weight|bias)$`)
	esrganOldTop  = regexp.MustCompile(`^model\.(\d+)\.(weight|bias)$`)
	bsrganRDB     = regexp.MustCompile(`^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)$`)
	bsrganUp      = regexp.MustCompile(`^upconv(\d)\.(weight|bias)$`)
)

// Upscaler returns the renames of an upscaler model's tensors to their
// canonical names. It recognises three RRDBNet layouts: the original
// ESRGAN one (model.0, model.1.sub.N.RDBk.convj.0, model.1.sub.<nb>, then
// per 2× step model.3k, and model.3n+2 / model.3n+4 for the HR and last
// convolutions), BSRGAN / RealSR's (RRDB_trunk, trunk_conv, upconvK,
// HRconv) and basicsr's, which is canonical. Other names (an
// SRVGGNetCompact's body.N, or what no table knows) keep their stored
// names, so that the model reports them. A "module." prefix
// (DataParallel) is dropped from every name.
func Upscaler(names []string) ([]Rename, error) {
	strip := len(names) > 0
	for _, n := range names {
		if !strings.HasPrefix(n, "module.") {
			strip = false
			break
		}
	}
	stored := make([]string, len(names))
	for i, n := range names {
		stored[i] = n
		if strip {
			stored[i] = strings.TrimPrefix(n, "module.")
		}
	}
	// The old layout's top-level indices: the largest is the last
	// convolution, 3n+4 for n 2× steps.
	last := -1
	old := false
	for _, n := range stored {
		if esrganOldRDB.MatchString(n) {
			old = true
		}
		if m := esrganOldTop.FindStringSubmatch(n); m != nil {
			i, _ := strconv.Atoi(m[1])
			last = max(last, i)
		}
	}
	var ups int
	if old {
		if last < 4 || (last-4)%3 != 0 {
			return nil, fmt.Errorf("an ESRGAN model whose last layer is model.%d (want model.4, model.7, model.10, ...: 3 per 2× step)", last)
		}
		ups = (last - 4) / 3
	}
	out := make([]Rename, 0, len(names))
	seen := map[string]string{}
	for i, n := range stored {
		to := n
		switch {
		case old && esrganOldRDB.MatchString(n):
			m := esrganOldRDB.FindStringSubmatch(n)
			to = fmt.Sprintf("body.%s.rdb%s.conv%s.%s", m[1], m[2], m[3], m[4])
		case old && esrganOldBody.MatchString(n):
			to = "conv_body." + esrganOldBody.FindStringSubmatch(n)[2]
		case old && esrganOldTop.MatchString(n):
			m := esrganOldTop.FindStringSubmatch(n)
			idx, _ := strconv.Atoi(m[1])
			switch {
			case idx == 0:
				to = "conv_first." + m[2]
			case idx == last:
				to = "conv_last." + m[2]
			case idx == 3*ups+2:
				to = "conv_hr." + m[2]
			case idx%3 == 0 && idx/3 >= 1 && idx/3 <= ups:
				to = fmt.Sprintf("conv_up%d.%s", idx/3, m[2])
			}
		case bsrganRDB.MatchString(n):
			m := bsrganRDB.FindStringSubmatch(n)
			to = fmt.Sprintf("body.%s.rdb%s.conv%s.%s", m[1], m[2], m[3], m[4])
		case bsrganUp.MatchString(n):
			m := bsrganUp.FindStringSubmatch(n)
			to = fmt.Sprintf("conv_up%s.%s", m[1], m[2])
		case strings.HasPrefix(n, "trunk_conv."):
			to = "conv_body." + strings.TrimPrefix(n, "trunk_conv.")
		case strings.HasPrefix(n, "HRconv."):
			to = "conv_hr." + strings.TrimPrefix(n, "HRconv.")
		}
		if prev, dup := seen[to]; dup {
			return nil, fmt.Errorf("tensors %q and %q both stand for %q", prev, names[i], to)
		}
		seen[to] = names[i]
		out = append(out, Rename{From: names[i], To: to})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].To < out[j].To })
	return out, nil
}
