package deps

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/build/constraint"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// layers is the module's import order, bottom first: a package may import
// packages of its own line or of the lines above it, never of a line below.
// Packages are named relative to the module path; "X/..." names X and every
// package under it, and "." is the module root (main.go). Every package of
// the module must match exactly one line; a line may name a package that
// does not exist yet (engine/family, engine/families/...).
//
// Notes on the order:
//   - engine/weights sits below engine/nn: nn's layers load themselves
//     through weights.Builder.
//   - kernels (the CUDA fatbins) shares the backends' line because
//     engine/backend/cuda embeds it.
//   - engine/internal/... holds test-only helpers (engine/internal/testref);
//     the test-only rule keeps them out of non-test code.
//   - server (darkroom serve's HTTP API and job queue) sits below cmd,
//     beside no frontend: it drives the engine only.
//   - The top line holds the commands (main.go, tools/...) and this
//     package.
const layers = `
engine/tensor
engine/backend
engine/backend/cpu/gemm, engine/backend/cpu, engine/backend/cuda, kernels, engine/backend/backendtest
engine/rng, engine/hub/...
engine/weights/internal/mapfile, engine/weights/safetensors, engine/weights/pth, engine/weights/gguf, engine/weights/keymap, engine/weights, engine/weights/lora, engine/weights/weightstest
engine/nn
engine/tokenizer/...
engine/internal/...
engine/models/...
engine/sampling
engine/family
engine/families/...
engine/demo
engine/grid
engine
termimg
script/...
repl
tui/...
server/...
cmd
., internal/..., tools/...
`

// frontends are the packages no engine package may import.
var frontends = []string{"tui/...", "repl/...", "script/...", "cmd/...", "termimg/...", "server/..."}

// testOnly are helper packages that only _test.go files may import.
var testOnly = []string{"engine/internal/testref", "engine/hub/hubtest", "engine/weights/weightstest"}

// familyHelpers are the packages under engine/families/ that every family
// may import (shared helpers, once there are any), as patterns, e.g.
// "engine/families/internal/...". Families import no other family.
var familyHelpers = []string{"engine/families/internal/..."}

// rules are the constraints beyond the layers. Imports in _test.go files
// are exempt from the layers and from every rule whose tests field is
// false: a test may drive the package above its own (engine/demo's tests
// run engine) and build fixtures with packages its package must not use
// (cmd's tests write safetensors files with engine/tensor). The boundaries
// marked tests: true hold for tests too.
var rules = []rule{
	{
		name:   "cmd-api",
		why:    "cmd reaches the engine only through its public API (engine, and engine/demo for the built-in model), the frontends (termimg, script, repl, tui) and the server",
		from:   []string{"cmd/..."},
		breaks: importsOutside("engine", "engine/demo", "termimg/...", "script/...", "repl/...", "tui/...", "server/...", "cmd/..."),
	},
	{
		name:   "server-api",
		why:    "the server reaches the engine only through its public API (engine; engine/demo in tests) and imports no frontend",
		from:   []string{"server/..."},
		breaks: importsOutside("engine", "server/..."),
	},
	{
		name:   "repl-not-tui",
		why:    "the REPL does not import the TUI; what both need lives below them (termimg, script, engine)",
		from:   []string{"repl/..."},
		tests:  true,
		breaks: importsAny("tui/..."),
	},
	{
		name:   "engine-no-frontend",
		why:    "no package under engine/ imports a frontend (tui, repl, script, cmd, termimg) or the server",
		from:   []string{"engine/..."},
		tests:  true,
		breaks: importsAny(frontends...),
	},
	{
		name:   "sampling-model-blind",
		why:    "samplers see the model only as a function: engine/sampling imports no engine/models/*, engine/family or engine/families/*",
		from:   []string{"engine/sampling/..."},
		tests:  true,
		breaks: importsAny("engine/models/...", "engine/family/...", "engine/families/..."),
	},
	{
		name:   "families-apart",
		why:    "a model family imports no other family, only the shared helpers listed in familyHelpers",
		from:   []string{"engine/families/..."},
		tests:  true,
		breaks: otherFamily(familyHelpers...),
	},
	{
		name:   "families-imports",
		why:    "a model family builds only on engine/family, engine/models/*, engine/sampling, engine/weights/*, engine/tokenizer, engine/nn, engine/backend and engine/tensor (never engine, engine/demo or a backend implementation)",
		from:   []string{"engine/families/..."},
		breaks: importsOutside("engine/family/...", "engine/models/...", "engine/sampling/...", "engine/weights/...", "engine/tokenizer/...", "engine/nn/...", "engine/backend", "engine/tensor/...", "engine/families/..."),
	},
	{
		name:   "tokenizer-stdlib",
		why:    "engine/tokenizer imports only the standard library and its own subpackages",
		from:   []string{"engine/tokenizer/..."},
		breaks: importsBeyondStd("engine/tokenizer/..."),
	},
	{
		name:   "hub-stdlib",
		why:    "engine/hub (the Hugging Face Hub client) imports only the standard library",
		from:   []string{"engine/hub/..."},
		tests:  true,
		breaks: importsBeyondStd("engine/hub/..."),
	},
	{
		name:   "test-only",
		why:    "test helpers (testOnly: " + strings.Join(testOnly, ", ") + ") are imported only from _test.go files",
		from:   []string{"..."},
		breaks: importsAny(testOnly...),
	},
}

// knownViolations are imports that break a rule today and are being
// removed: delete an entry together with its import. An entry that no
// longer matches an import fails the test, so the list cannot go stale.
var knownViolations = []knownViolation{}

// TestDependencies lists the module's packages with go list and checks
// every import of every file, build-constrained files included, against
// layers, rules and knownViolations.
func TestDependencies(t *testing.T) {
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("skipping: no go tool to list packages with: %v", err)
	}
	pkgs, edges, err := loadModule(gotool)
	if err != nil {
		t.Fatal(err)
	}
	lt := parseLayers(layers)
	for _, p := range lt.unused(pkgs) {
		t.Logf("layer table: %s matches no package (yet)", p)
	}
	vs, stale := filterKnown(check(lt, rules, pkgs, edges), knownViolations)
	for _, v := range vs {
		t.Error(v)
	}
	for _, k := range stale {
		t.Errorf("knownViolations: %s importing %s (rule %s) no longer happens; delete the entry", k.file, k.imports, k.rule)
	}
}

// TestCheck feeds the checker fake imports, through the real layer table
// and rules, and checks which rules each one breaks.
func TestCheck(t *testing.T) {
	lt := parseLayers(layers)
	cases := []struct {
		edge string // "from -> to", "(test)" appended for a _test.go file
		want []string
	}{
		{"engine/nn -> engine/weights", nil},
		{"engine/backend/cpu -> engine/backend/cpu/gemm", nil}, // one line
		{"engine/nn -> engine/models/unet", []string{"layers"}},
		{"engine/weights -> engine/nn", []string{"layers"}},
		{"engine -> engine/models/unet", nil},
		{"tui -> repl", nil},
		{"main -> cmd", nil},

		{"cmd -> engine", nil},
		{"cmd -> engine/demo", nil},
		{"cmd -> tui", nil},
		{"cmd -> termimg", nil},
		{"cmd -> github.com/spf13/cobra", nil},
		{"cmd -> engine/weights", []string{"cmd-api"}},
		{"cmd -> engine/models/t5", []string{"cmd-api"}},
		{"cmd -> engine/backend/cuda", []string{"cmd-api"}},
		{"cmd -> engine/tensor (test)", nil},

		{"repl -> tui", []string{"layers", "repl-not-tui"}},
		{"repl -> tui/internal/e2e (test)", []string{"repl-not-tui"}},
		{"repl -> termimg", nil},

		{"engine/weights -> termimg", []string{"layers", "engine-no-frontend"}},
		{"engine -> script", []string{"layers", "engine-no-frontend"}},
		{"engine -> tui (test)", []string{"engine-no-frontend"}},
		{"engine/demo -> engine (test)", nil},

		{"engine/sampling -> engine/rng", nil},
		{"engine/sampling -> engine/models/unet", []string{"sampling-model-blind"}}, // models are a line below
		{"engine/sampling -> engine/family", []string{"layers", "sampling-model-blind"}},
		{"engine/sampling -> engine/models/unet (test)", []string{"sampling-model-blind"}},

		{"engine/family -> engine/sampling", nil},
		{"engine/families/sd1 -> engine/family", nil},
		{"engine/families/sd1 -> engine/models/clip", nil},
		{"engine/families/sd1 -> engine/weights/keymap", nil},
		{"engine/families/sd1 -> engine/families/sd1/internal/conv", nil},
		{"engine/families/sd1 -> engine/families/sdxl", []string{"families-apart"}},
		{"engine/families/sd1 -> engine/families/sdxl (test)", []string{"families-apart"}},
		{"engine/families/sd1 -> engine", []string{"layers", "families-imports"}},
		{"engine/families/sd1 -> engine/backend/cuda", []string{"families-imports"}},
		{"engine/families/sd1 -> engine/backend/cpu (test)", nil},
		{"engine/families -> engine/families/sd1", nil}, // a registry of all families

		{"engine/tokenizer -> strings", nil},
		{"engine/tokenizer -> engine/tokenizer/internal/bpe", nil},
		{"engine/tokenizer -> engine/tensor", []string{"tokenizer-stdlib"}},
		{"engine/tokenizer -> golang.org/x/text/unicode/norm", []string{"tokenizer-stdlib"}},
		{"engine/tokenizer -> golang.org/x/text/unicode/norm (test)", nil},

		{"engine/models/unet -> engine/internal/testref (test)", nil},
		{"engine/models/unet -> engine/internal/testref", []string{"test-only"}},
	}
	for _, c := range cases {
		e := fakeEdge(c.edge)
		pkgs := []string{e.from}
		if e.local {
			pkgs = append(pkgs, e.to)
		}
		var got []string
		for _, v := range check(lt, rules, pkgs, []edge{e}) {
			got = append(got, v.rule)
			if msg := v.String(); !strings.Contains(msg, e.from+" imports "+e.to) || !strings.Contains(msg, v.rule) {
				t.Errorf("%s: message %q does not name the importer, the imported package and the rule", c.edge, msg)
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: broke %q, want %q", c.edge, got, c.want)
		}
	}
}

func TestCheckPackageInNoLayer(t *testing.T) {
	lt := parseLayers(layers)
	vs := check(lt, rules, []string{"engine/nn", "engine/weights/onnx", "frobnicate"}, nil)
	var got []string
	for _, v := range vs {
		got = append(got, v.pkg)
		if !strings.Contains(v.String(), "no line") {
			t.Errorf("message %q does not say the package has no line", v)
		}
	}
	if want := []string{"engine/weights/onnx", "frobnicate"}; !slices.Equal(got, want) {
		t.Errorf("packages in no layer: %q, want %q", got, want)
	}

	two := parseLayers("a/...\na/b\n")
	if vs := check(two, nil, []string{"a/b"}, nil); len(vs) != 1 || !strings.Contains(vs[0].String(), "lines 1 and 2") {
		t.Errorf("a package on two lines: %v", vs)
	}
}

func TestFamilyHelpers(t *testing.T) {
	breaks := otherFamily("engine/families/internal/...")
	for _, c := range []struct {
		edge string
		want bool
	}{
		{"engine/families/sd1 -> engine/families/internal/clipcond", false},
		{"engine/families/sd1/x -> engine/families/sd1/y", false},
		{"engine/families/sd1 -> engine/families/sdxl", true},
		{"engine/families/sd1/x -> engine/families/sd3", true},
		{"engine/families/sd1 -> engine/models/clip", false},
	} {
		if got := breaks(fakeEdge(c.edge)); got != c.want {
			t.Errorf("%s: breaks = %v, want %v", c.edge, got, c.want)
		}
	}
}

func TestFilterKnown(t *testing.T) {
	vs := check(parseLayers(layers), rules, []string{"cmd", "engine/weights", "engine/sampling"}, []edge{
		fakeEdge("cmd -> engine/weights"),
		fakeEdge("cmd -> engine/sampling"),
	})
	known := []knownViolation{
		{file: "cmd/x.go", imports: "engine/weights", rule: "cmd-api"},
		{file: "cmd/x.go", imports: "engine/weights", rule: "layers"},   // a different rule
		{file: "cmd/y.go", imports: "engine/sampling", rule: "cmd-api"}, // a different file
	}
	left, stale := filterKnown(vs, known)
	if len(left) != 1 || left[0].edge.to != "engine/sampling" {
		t.Errorf("left %v, want only cmd -> engine/sampling", left)
	}
	if len(stale) != 2 || stale[0] != known[1] || stale[1] != known[2] {
		t.Errorf("stale %v, want the last two entries", stale)
	}
}

// fakeEdge parses "from -> to", with " (test)" appended for an import in
// a _test.go file. from's file is from/x.go; to is a standard package when
// its first element has no dot and it is in no layer.
func fakeEdge(s string) edge {
	s, test := strings.CutSuffix(s, " (test)")
	from, to, ok := strings.Cut(s, " -> ")
	if !ok {
		panic("fake edge without ->: " + s)
	}
	if from == "main" {
		from = "."
	}
	e := edge{from: from, to: to, file: from + "/x.go", test: test}
	if test {
		e.file = from + "/x_test.go"
	}
	first, _, _ := strings.Cut(to, "/")
	switch {
	case strings.Contains(first, "."):
	case len(parseLayers(layers).find(to)) == 0:
		e.std = true
	default:
		e.local = true
	}
	return e
}

// An edge is one import in one file.
type edge struct {
	from  string // the importing package, relative to the module ("." for the root)
	to    string // the imported package: relative to the module when local, else its full path
	file  string // the importing file, slash-separated, relative to the module root
	local bool   // to is a package of this module
	std   bool   // to is in the standard library
	test  bool   // file is a _test.go file
}

// A rule covers the imports of the packages matching from (and of their
// _test.go files if tests is set); breaks says whether an import breaks it.
type rule struct {
	name   string
	why    string // the rule in words, printed with each violation
	from   []string
	tests  bool
	breaks func(edge) bool
}

// importsAny breaks on an import of a module package matching pats.
func importsAny(pats ...string) func(edge) bool {
	return func(e edge) bool { return e.local && matchAny(pats, e.to) }
}

// importsOutside breaks on an import of a module package not matching
// pats. Imports from outside the module are not its concern.
func importsOutside(pats ...string) func(edge) bool {
	return func(e edge) bool { return e.local && !matchAny(pats, e.to) }
}

// importsBeyondStd breaks on an import that is neither in the standard
// library nor a module package matching pats.
func importsBeyondStd(pats ...string) func(edge) bool {
	return func(e edge) bool { return !e.std && !(e.local && matchAny(pats, e.to)) }
}

// otherFamily breaks when a package of one family (engine/families/X/...)
// imports another family's, unless the import matches helpers. The
// engine/families package itself, if there is one (a list of every
// family), belongs to no family.
func otherFamily(helpers ...string) func(edge) bool {
	family := func(p string) string {
		rest, ok := strings.CutPrefix(p, "engine/families/")
		if !ok {
			return ""
		}
		name, _, _ := strings.Cut(rest, "/")
		return name
	}
	return func(e edge) bool {
		if !e.local || matchAny(helpers, e.to) {
			return false
		}
		from, to := family(e.from), family(e.to)
		// engine/families/all is the registration list: importing every
		// family is its whole job.
		return from != "" && from != "all" && to != "" && from != to
	}
}

// match reports whether pkg matches pat: "..." matches everything, "X/..."
// matches X and the packages under it, anything else only itself.
func match(pat, pkg string) bool {
	if pat == "..." {
		return true
	}
	if dir, ok := strings.CutSuffix(pat, "/..."); ok {
		return pkg == dir || strings.HasPrefix(pkg, dir+"/")
	}
	return pkg == pat
}

func matchAny(pats []string, pkg string) bool {
	return slices.ContainsFunc(pats, func(p string) bool { return match(p, pkg) })
}

// A layerTable holds the patterns of each line of layers, bottom first.
type layerTable [][]string

func parseLayers(s string) layerTable {
	var lt layerTable
	for line := range strings.SplitSeq(s, "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		var pats []string
		for p := range strings.SplitSeq(line, ",") {
			pats = append(pats, strings.TrimSpace(p))
		}
		lt = append(lt, pats)
	}
	return lt
}

// find returns the lines (0-based) that pkg matches.
func (lt layerTable) find(pkg string) []int {
	var lines []int
	for i, pats := range lt {
		if matchAny(pats, pkg) {
			lines = append(lines, i)
		}
	}
	return lines
}

// unused returns the patterns that match none of pkgs.
func (lt layerTable) unused(pkgs []string) []string {
	var out []string
	for _, pats := range lt {
		for _, p := range pats {
			if !slices.ContainsFunc(pkgs, func(pkg string) bool { return match(p, pkg) }) {
				out = append(out, p)
			}
		}
	}
	return out
}

func (lt layerTable) describe(line int) string {
	return fmt.Sprintf("line %d of layers (%s)", line+1, strings.Join(lt[line], ", "))
}

// A violation is an import that breaks a rule ("layers" for the layer
// order), or, with a zero edge, a package that is on no line or on two.
type violation struct {
	edge edge
	pkg  string // the package, for a package on no line or on two
	rule string
	why  string
}

func (v violation) String() string {
	if v.pkg != "" {
		return fmt.Sprintf("package %s: %s (rule %s)", v.pkg, v.why, v.rule)
	}
	return fmt.Sprintf("%s: %s imports %s, which breaks rule %s: %s", v.edge.file, v.edge.from, v.edge.to, v.rule, v.why)
}

// check returns the violations among edges, and the packages of pkgs that
// are on no line of lt or on more than one.
func check(lt layerTable, rules []rule, pkgs []string, edges []edge) []violation {
	var vs []violation
	line := map[string]int{}
	for _, p := range pkgs {
		switch ls := lt.find(p); len(ls) {
		case 0:
			vs = append(vs, violation{pkg: p, rule: "layers", why: "on no line of layers in internal/deps/deps_test.go; add it to the line it belongs to"})
		case 1:
			line[p] = ls[0]
		default:
			vs = append(vs, violation{pkg: p, rule: "layers", why: fmt.Sprintf("on lines %d and %d of layers; a package has one line", ls[0]+1, ls[1]+1)})
		}
	}
	for _, e := range edges {
		if e.local && !e.test {
			lf, okf := line[e.from]
			lto, okt := line[e.to]
			if okf && okt && lto > lf {
				vs = append(vs, violation{edge: e, rule: "layers", why: fmt.Sprintf(
					"%s is on %s and may import only that line and those above it, but %s is on %s",
					e.from, lt.describe(lf), e.to, lt.describe(lto))})
			}
		}
		for _, r := range rules {
			if (e.test && !r.tests) || !matchAny(r.from, e.from) {
				continue
			}
			if r.breaks(e) {
				vs = append(vs, violation{edge: e, rule: r.name, why: r.why})
			}
		}
	}
	return vs
}

// A knownViolation allows one import that breaks a rule, until it is
// removed.
type knownViolation struct {
	file    string // the importing file, relative to the module root
	imports string // the imported package, relative to the module
	rule    string
}

// filterKnown drops the violations that known allows and returns the
// others, and the entries of known that allowed none.
func filterKnown(vs []violation, known []knownViolation) (left []violation, stale []knownViolation) {
	used := make([]bool, len(known))
	for _, v := range vs {
		i := slices.Index(known, knownViolation{file: v.edge.file, imports: v.edge.to, rule: v.rule})
		if v.pkg != "" || i < 0 {
			left = append(left, v)
			continue
		}
		used[i] = true
	}
	for i, k := range known {
		if !used[i] {
			stale = append(stale, k)
		}
	}
	return left, stale
}

// listedPackage is the part of go list -json's output that loadModule reads.
type listedPackage struct {
	ImportPath string
	Dir        string
	Standard   bool
	Module     *struct {
		Path string
		Dir  string
		Main bool
	}
	GoFiles, CgoFiles, TestGoFiles, XTestGoFiles, IgnoredGoFiles []string
}

// loadModule lists the module's packages (relative to the module path) and
// every import of every one of their .go files: the files of this build,
// its tests, and the files other build constraints select (other systems,
// the nodemo and nokernels tags). Files marked //go:build ignore are
// programs run by go run or by the script interpreter (generators,
// recipes), not part of the package, and are skipped.
func loadModule(gotool string) (pkgs []string, edges []edge, err error) {
	out, err := run(gotool, "", "env", "GOMOD")
	if err != nil {
		return nil, nil, err
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return nil, nil, errors.New("go env GOMOD: not in a module")
	}
	root := filepath.Dir(gomod)
	out, err = run(gotool, root, "list", "-deps", "-json", "./...")
	if err != nil {
		return nil, nil, err
	}
	var listed []listedPackage
	std := map[string]bool{}
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			return nil, nil, fmt.Errorf("go list: decode: %w", err)
		}
		std[p.ImportPath] = p.Standard
		if p.Module != nil && p.Module.Main && p.Module.Dir == root {
			listed = append(listed, p)
		}
	}
	if len(listed) == 0 {
		return nil, nil, fmt.Errorf("go list ./... in %s: no packages of the module", root)
	}
	modPath := listed[0].Module.Path
	rel := func(importPath string) (string, bool) {
		if importPath == modPath {
			return ".", true
		}
		r, ok := strings.CutPrefix(importPath, modPath+"/")
		return r, ok
	}
	fset := token.NewFileSet()
	for _, p := range listed {
		from, _ := rel(p.ImportPath)
		pkgs = append(pkgs, from)
		built := len(p.GoFiles) + len(p.CgoFiles) + len(p.TestGoFiles) + len(p.XTestGoFiles)
		for i, name := range slices.Concat(p.GoFiles, p.CgoFiles, p.TestGoFiles, p.XTestGoFiles, p.IgnoredGoFiles) {
			path := filepath.Join(p.Dir, name)
			f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly|parser.ParseComments)
			if err != nil {
				return nil, nil, err
			}
			if i >= built && taggedIgnore(f.Comments, f.Package) {
				continue
			}
			file, err := filepath.Rel(root, path)
			if err != nil {
				return nil, nil, err
			}
			for _, spec := range f.Imports {
				imp, err := strconv.Unquote(spec.Path.Value)
				if err != nil {
					return nil, nil, fmt.Errorf("%s: %w", path, err)
				}
				e := edge{from: from, to: imp, file: filepath.ToSlash(file), test: strings.HasSuffix(name, "_test.go")}
				if r, ok := rel(imp); ok {
					e.to, e.local = r, true
				} else if s, ok := std[imp]; ok {
					e.std = s
				} else {
					// Imported only by a file this build leaves out: the
					// standard library's paths have no dot in their first
					// element (and cgo's "C" is none).
					first, _, _ := strings.Cut(imp, "/")
					e.std = !strings.Contains(first, ".")
				}
				edges = append(edges, e)
			}
		}
	}
	return pkgs, edges, nil
}

// taggedIgnore reports whether a //go:build line before the package clause
// names the ignore tag.
func taggedIgnore(comments []*ast.CommentGroup, pkg token.Pos) bool {
	for _, g := range comments {
		if g.Pos() >= pkg {
			break
		}
		for _, c := range g.List {
			if !constraint.IsGoBuild(c.Text) {
				continue
			}
			x, err := constraint.Parse(c.Text)
			if err != nil {
				continue
			}
			named := false
			x.Eval(func(tag string) bool {
				named = named || tag == "ignore"
				return true
			})
			if named {
				return true
			}
		}
	}
	return false
}

// run runs the go tool in dir and returns its standard output.
func run(gotool, dir string, args ...string) ([]byte, error) {
	cmd := exec.Command(gotool, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}
