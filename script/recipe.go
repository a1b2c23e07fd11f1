package script

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/scanner"
	"go/token"
	"go/types"
	"slices"
	"strconv"
	"strings"
)

// Prelude is evaluated at the start of a REPL session (and of a script
// that is a list of cells): the usual imports and the session variables
// eng (the engine), ctx (cancelled by Ctrl-C), show (draw an image
// inline), progress (a per-step event printer), check (stop the cell on
// a non-nil error) and generate (dr.Generate: run a request as a job of
// the session, through the TUI's queue there).
const Prelude = `import (
	"context"
	"fmt"
	"image"
	"math"
	"os"
	"strings"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/engine/grid"
	"github.com/darkroom-ai/darkroom/engine/rng"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/script/dr"
)
eng := dr.Engine()
ctx := dr.Context()
show := dr.Show
progress := dr.Progress
check := dr.Check
generate := dr.Generate`

// preludeImports are the Prelude's imports by package name.
var preludeImports = map[string]string{
	"context": "context", "fmt": "fmt", "image": "image", "math": "math", "os": "os",
	"strings": "strings", "time": "time",
	"engine":   "github.com/darkroom-ai/darkroom/engine",
	"grid":     "github.com/darkroom-ai/darkroom/engine/grid",
	"rng":      "github.com/darkroom-ai/darkroom/engine/rng",
	"sampling": "github.com/darkroom-ai/darkroom/engine/sampling",
	"dr":       "github.com/darkroom-ai/darkroom/script/dr",
}

// preludeVars are the Prelude's session variables, as recipe statements.
var preludeVars = []struct{ name, def string }{
	{"eng", "eng := dr.Engine()"},
	{"ctx", "ctx := dr.Context()"},
	{"show", "show := dr.Show"},
	{"progress", "progress := dr.Progress"},
	{"check", "check := dr.Check"},
	{"generate", "generate := dr.Generate"},
}

// LoadPrelude evaluates Prelude; it is not recorded as a cell.
func (it *Interpreter) LoadPrelude(ctx context.Context) error {
	if _, err := it.Eval(ctx, Prelude); err != nil {
		return fmt.Errorf("prelude: %w", err)
	}
	it.run.Lock()
	it.cells = it.cells[:len(it.cells)-1]
	it.run.Unlock()
	return nil
}

// Cells returns the number of successful cells recorded for Recipe.
func (it *Interpreter) Cells() int {
	it.run.Lock()
	defer it.run.Unlock()
	return len(it.cells)
}

// Recipe writes the session's successful cells as a runnable recipe: a Go
// main package (with `//go:build ignore`, so the go tool skips it) that
// `darkroom run` executes. comment heads the file. Imports, functions and
// types go to the top level (a redefined function keeps its last
// definition), statements into main in order; echoed values become
// fmt.Println calls and displayed images show calls.
func (it *Interpreter) Recipe(comment string) ([]byte, error) {
	it.run.Lock()
	var segs []string
	for _, c := range it.cells {
		segs = append(segs, c...)
	}
	it.run.Unlock()
	return buildRecipe(segs, comment)
}

func buildRecipe(segs []string, comment string) ([]byte, error) {
	imports := map[string]string{} // path -> name ("" = default)
	var decls []string
	declIndex := map[string]int{} // func/type name -> index in decls
	var body []string
	defined := map[string]bool{}
	fs := token.NewFileSet()
	for _, s := range segs {
		first := firstToken(s)
		switch first {
		case token.IMPORT, token.FUNC, token.TYPE:
			f, err := parser.ParseFile(fs, "cell", "package main\n"+s, 0)
			if err != nil {
				// A func literal statement: keep it in main.
				body = append(body, s)
				continue
			}
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				name := ""
				if imp.Name != nil {
					name = imp.Name.Name
				}
				imports[p] = name
			}
			src := "package main\n" + s
			for _, d := range f.Decls {
				if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.IMPORT {
					continue
				}
				if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && fd.Type.TypeParams == nil && fd.Body != nil {
					// A function of the session may use its variables, which
					// live in main: it becomes a function variable there.
					name := fd.Name.Name
					sig := "func" + nodeSource(fs, fd.Type.Params, src)
					if fd.Type.Results != nil {
						sig += " " + nodeSource(fs, fd.Type.Results, src)
					}
					if !defined[name] {
						body = append(body, "var "+name+" "+sig)
						defined[name] = true
					}
					body = append(body, name+" = "+sig+" "+nodeSource(fs, fd.Body, src))
					continue
				}
				text := nodeSource(fs, d, src)
				key := declName(d)
				if i, ok := declIndex[key]; ok && key != "" {
					decls[i] = text
					continue
				}
				declIndex[key] = len(decls)
				decls = append(decls, text)
			}
		default:
			body = append(body, redeclare(s, defined))
		}
	}
	mainSrc := strings.Join(body, "\n")
	// Session variables the statements use are defined first.
	var head []string
	for _, v := range preludeVars {
		if usesName(mainSrc, v.name) || slices.ContainsFunc(decls, func(d string) bool { return usesName(d, v.name) }) {
			head = append(head, v.def)
		}
	}
	all := strings.Join(head, "\n") + "\n" + mainSrc + "\n" + strings.Join(decls, "\n")
	for name, p := range preludeImports {
		if usesName(all, name) {
			if _, ok := imports[p]; !ok {
				imports[p] = ""
			}
		}
	}
	// Session variables used only by a function declaration are globals.
	var buf bytes.Buffer
	buf.WriteString("//go:build ignore\n\n")
	for _, l := range strings.Split(strings.TrimSpace(comment), "\n") {
		if l != "" {
			buf.WriteString("// " + l + "\n")
		}
	}
	buf.WriteString("package main\n\nimport (\n")
	paths := make([]string, 0, len(imports))
	for p := range imports {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	// Standard library first, then a blank line and the rest.
	slices.SortStableFunc(paths, func(a, b string) int {
		return cmpBool(strings.Contains(a, "."), strings.Contains(b, "."))
	})
	for i, p := range paths {
		if i > 0 && strings.Contains(p, ".") && !strings.Contains(paths[i-1], ".") {
			buf.WriteString("\n")
		}
		fmt.Fprintf(&buf, "\t%s %q\n", imports[p], p)
	}
	buf.WriteString(")\n\nfunc main() {\n")
	for _, h := range head {
		buf.WriteString(h + "\n")
	}
	buf.WriteString(mainSrc + "\n")
	if unused := unusedNames(strings.Join(head, "\n") + "\n" + mainSrc); len(unused) > 0 {
		buf.WriteString("// Keep variables the session defined but did not use.\n")
		fmt.Fprintf(&buf, "%s = %s\n", strings.Repeat("_, ", len(unused)-1)+"_", strings.Join(unused, ", "))
	}
	buf.WriteString("}\n")
	for _, d := range decls {
		buf.WriteString("\n" + d + "\n")
	}
	out, err := format.Source(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("recipe: generated invalid Go: %w", err)
	}
	return out, nil
}

func firstToken(s string) token.Token {
	fs := token.NewFileSet()
	f := fs.AddFile("", -1, len(s))
	var sc scanner.Scanner
	sc.Init(f, []byte(s), nil, 0)
	_, tok, _ := sc.Scan()
	return tok
}

func nodeSource(fs *token.FileSet, n ast.Node, src string) string {
	f := fs.File(n.Pos())
	return src[f.Offset(n.Pos()):f.Offset(n.End())]
}

// declName keys a function or type declaration for redefinition ("func
// f", "method T.f", "type T"), or "" for other declarations.
func declName(d ast.Decl) string {
	switch d := d.(type) {
	case *ast.FuncDecl:
		if d.Recv != nil && len(d.Recv.List) == 1 {
			return "method " + exprString(d.Recv.List[0].Type) + "." + d.Name.Name
		}
		return "func " + d.Name.Name
	case *ast.GenDecl:
		if d.Tok == token.TYPE && len(d.Specs) == 1 {
			return "type " + d.Specs[0].(*ast.TypeSpec).Name.Name
		}
	}
	return ""
}

func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.StarExpr:
		return "*" + exprString(e.X)
	}
	return fmt.Sprintf("%T", e)
}

// redeclare turns `x := v` into `x = v` when every name on the left was
// defined by an earlier statement (the REPL allows redefinition; Go does
// not), and records the names defined.
func redeclare(s string, defined map[string]bool) string {
	f, err := parser.ParseFile(token.NewFileSet(), "", "package main\nfunc _() {\n"+s+"\n}", 0)
	if err != nil {
		return s
	}
	stmts := f.Decls[0].(*ast.FuncDecl).Body.List
	if len(stmts) != 1 {
		return s
	}
	switch st := stmts[0].(type) {
	case *ast.AssignStmt:
		if st.Tok != token.DEFINE {
			return s
		}
		allOld := true
		for _, e := range st.Lhs {
			id, ok := e.(*ast.Ident)
			if !ok {
				return s
			}
			if id.Name != "_" && !defined[id.Name] {
				allOld = false
			}
			defined[id.Name] = true
		}
		if allOld {
			if i := strings.Index(s, ":="); i >= 0 {
				return s[:i] + "=" + s[i+2:]
			}
		}
	case *ast.DeclStmt:
		if g, ok := st.Decl.(*ast.GenDecl); ok {
			for _, sp := range g.Specs {
				if vs, ok := sp.(*ast.ValueSpec); ok {
					for _, id := range vs.Names {
						defined[id.Name] = true
					}
				}
			}
		}
	}
	return s
}

// usesName reports whether the identifier name occurs in Go source src.
func usesName(src, name string) bool {
	fs := token.NewFileSet()
	f := fs.AddFile("", -1, len(src))
	var sc scanner.Scanner
	sc.Init(f, []byte(src), nil, 0)
	for {
		_, tok, lit := sc.Scan()
		if tok == token.EOF {
			return false
		}
		if tok == token.IDENT && lit == name {
			return true
		}
	}
}

// unusedNames lists the variables of body (the statements of main) that
// are declared and not used, which Go rejects and the REPL allows. It
// type-checks with imports unresolved: scoping is all that matters here.
func unusedNames(body string) []string {
	fs := token.NewFileSet()
	src := "package main\nfunc main() {\n" + body + "\n}"
	f, err := parser.ParseFile(fs, "", src, 0)
	if err != nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	conf := types.Config{
		Importer: noImporter{},
		Error: func(err error) {
			var te types.Error
			if errors.As(err, &te) {
				if name, ok := strings.CutPrefix(te.Msg, "declared and not used: "); ok && !seen[name] {
					seen[name] = true
					out = append(out, name)
				}
			}
		},
	}
	conf.Check("main", fs, []*ast.File{f}, nil)
	return out
}

// noImporter fails every import; unusedNames needs no package.
type noImporter struct{}

func (noImporter) Import(path string) (*types.Package, error) {
	return nil, fmt.Errorf("no import of %s", path)
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
