package cmd

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/engine/demo"
	"github.com/spf13/cobra"
)

func newInfoCmd() *cobra.Command {
	var f struct {
		vae          string
		textEncoders []string
	}
	c := &cobra.Command{
		Use:   "info PATH",
		Short: "Describe a checkpoint: family, components, sizes, hyperparameters",
		Long: `Describe a model without running it.

PATH is a .safetensors checkpoint (A1111 / ComfyUI layout), a diffusers
folder, or the built-in model's name (` + demo.Name + `). info prints the detected family and the key that decided it, the
layout, each component (UNet, VAE, text encoder, anything else) with its
tensor count, parameter count, stored size and dtypes, the files with their
sizes, and the hyperparameters inferred from tensor shapes.`,
		Example: `  darkroom info v1-5-pruned-emaonly.safetensors
  darkroom info ./stable-diffusion-v1-5
  darkroom info ` + demo.Name,
		Args: exactArgs(1, "one PATH (a .safetensors file or a diffusers folder)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInfo(cmd.OutOrStdout(), args[0], f.vae, f.textEncoders)
		},
	}
	c.Flags().StringVar(&f.vae, "vae", "", "a separate VAE file, described in place of the checkpoint's")
	c.Flags().StringArrayVar(&f.textEncoders, "text-encoder", nil, "a separate text-encoder file (repeatable)")
	return c
}

func runInfo(w io.Writer, path, vae string, textEncoders []string) error {
	// The built-in model's name (when no such file is here) describes the
	// embedded checkpoint, written to a temporary file for the reader.
	builtin := ""
	if _, err := os.Stat(path); path == demo.Name && errors.Is(err, fs.ErrNotExist) && demo.CompressedSize() > 0 {
		dir, err := os.MkdirTemp("", "darkroom-info-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, demo.FileName)
		if err := demo.WriteFile(path); err != nil {
			return err
		}
		builtin = fmt.Sprintf("built-in %s (embedded in the binary, %s compressed)", demo.Name, humanBytes(int64(demo.CompressedSize())))
	}
	in, err := engine.Inspect(engine.ModelFiles{Model: path, VAE: vae, TextEncoders: textEncoders})
	if err != nil {
		return err
	}
	if builtin != "" {
		in.Path = builtin
		for i := range in.Files {
			in.Files[i].Path = demo.FileName
		}
	}
	s := summarize(in.Tensors)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "path\t%s\n", in.Path)
	fmt.Fprintf(tw, "layout\t%s\n", in.Layout)
	if in.KeyList != "" {
		fmt.Fprintf(tw, "key list\tnames, dtypes and shapes only (%s)\n", in.KeyList)
	}
	fam := in.Detection.String()
	switch {
	case in.DetectErr != nil:
		fam = in.DetectErr.Error()
	case !in.Detection.Runnable:
		fam += "; not supported yet"
	}
	fmt.Fprintf(tw, "family\t%s\n", fam)
	fmt.Fprintf(tw, "total\t%d tensors, %s parameters, %s stored\n", s.total.tensors, humanCount(s.total.params), humanBytes(s.total.bytes))
	tw.Flush()

	fmt.Fprintln(w)
	rows := [][]string{{"component", "prefix", "tensors", "parameters", "stored", "dtypes"}}
	for _, c := range s.components {
		rows = append(rows, []string{c.label, c.prefix, fmt.Sprint(c.tensors), humanCount(c.params), humanBytes(c.bytes), c.dtypeList()})
	}
	writeTable(w, "", rows, []bool{false, false, true, true, true, false})

	fmt.Fprintln(w)
	fmt.Fprintln(w, "files")
	rows = rows[:0]
	for _, f := range in.Files {
		comp := f.Component
		if comp == "" {
			comp = "-"
		}
		rows = append(rows, []string{humanBytes(f.Size), fmt.Sprintf("%d tensors", f.Tensors), comp, f.Path})
	}
	writeTable(w, "  ", rows, []bool{true, true, false, false})
	toks := make([]string, 0, len(in.TokenizerDirs))
	for name := range in.TokenizerDirs {
		toks = append(toks, name)
	}
	sort.Strings(toks)
	for _, name := range toks {
		fmt.Fprintf(w, "%-10s %s\n", name, in.TokenizerDirs[name])
	}
	if len(in.Metadata) > 0 {
		keys := make([]string, 0, len(in.Metadata))
		for k := range in.Metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(w, "metadata   %d entries: %s\n", len(keys), strings.Join(keys, ", "))
	}

	if len(in.Parts) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "hyperparameters")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, p := range in.Parts {
			fmt.Fprintf(tw, "  %s\t%s\n", p.Name, p.Config)
		}
		tw.Flush()
	}
	return nil
}

// writeTable prints rows in columns separated by two spaces; right[i]
// right-aligns column i. The last column is never padded.
func writeTable(w io.Writer, indent string, rows [][]string, right []bool) {
	var width []int
	for _, r := range rows {
		for i, cell := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], len(cell))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		b.WriteString(indent)
		for i, cell := range r {
			if i > 0 {
				b.WriteString("  ")
			}
			pad := strings.Repeat(" ", width[i]-len(cell))
			switch {
			case right[i]:
				b.WriteString(pad + cell)
			case i == len(r)-1:
				b.WriteString(cell)
			default:
				b.WriteString(cell + pad)
			}
		}
		fmt.Fprintln(w, b.String())
	}
}

// stats accumulates tensor counts, parameters, bytes and dtypes.
type stats struct {
	label, prefix string
	tensors       int
	params, bytes int64
	dtypes        map[string]int
}

func (s *stats) add(info engine.TensorInfo) {
	s.tensors++
	n := int64(1)
	for _, d := range info.Shape {
		n *= int64(d)
	}
	s.params += n
	s.bytes += info.Size
	if s.dtypes == nil {
		s.dtypes = map[string]int{}
	}
	s.dtypes[info.DType]++
}

func (s *stats) dtypeList() string {
	keys := make([]string, 0, len(s.dtypes))
	for k := range s.dtypes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, s.dtypes[k])
	}
	return strings.Join(parts, " ")
}

type summary struct {
	total      stats
	components []*stats
}

// knownComponents are the canonical prefixes reported by name; anything
// else is grouped by its first name component.
var knownComponents = []struct{ label, prefix string }{
	{"diffusion model", "model.diffusion_model."},
	{"VAE", "first_stage_model."},
	{"VAE", "vae."},
	{"text encoder", "cond_stage_model."},
	{"text encoders", "conditioner.embedders."},
	{"text encoders", "text_encoders."},
	{"text encoders", "text_encoder_files."},
	{"transformer", "transformer."},
	{"text encoder 2", "text_encoder_2."},
}

func componentOf(name string) (label, prefix string) {
	for _, k := range knownComponents {
		if strings.HasPrefix(name, k.prefix) {
			return k.label, k.prefix
		}
	}
	first, _, found := strings.Cut(name, ".")
	if !found {
		return "other", "(top level)"
	}
	return "other", first + "."
}

func summarize(tensors []engine.TensorInfo) summary {
	var s summary
	byPrefix := map[string]*stats{}
	for _, info := range tensors {
		s.total.add(info)
		label, prefix := componentOf(info.Name)
		c := byPrefix[prefix]
		if c == nil {
			c = &stats{label: label, prefix: prefix}
			byPrefix[prefix] = c
			s.components = append(s.components, c)
		}
		c.add(info)
	}
	rank := func(c *stats) int {
		for i, k := range knownComponents {
			if k.prefix == c.prefix {
				return i
			}
		}
		return len(knownComponents)
	}
	sort.SliceStable(s.components, func(i, j int) bool {
		ri, rj := rank(s.components[i]), rank(s.components[j])
		if ri != rj {
			return ri < rj
		}
		return s.components[i].prefix < s.components[j].prefix
	})
	return s
}

// humanCount formats a parameter count: 859520964 -> "859.5M".
func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fK", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

// humanBytes formats a byte count with binary units: "1.6 GiB".
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
