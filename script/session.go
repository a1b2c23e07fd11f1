package script

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"slices"
	"strings"
)

// Var describes a variable of the session.
type Var struct {
	Name, Type string
	// Value is the formatted value, cut to 80 characters.
	Value string
}

// Vars lists the session's variables and constants, sorted by name.
func (it *Interpreter) Vars() []Var {
	var out []Var
	for name, v := range it.yi.Globals() {
		if name == "_" || strings.HasPrefix(name, "_darkroom") || !v.IsValid() {
			continue
		}
		for v.Kind() == reflect.Interface && !v.IsNil() {
			v = v.Elem()
		}
		val := "<nil>"
		typ := v.Type().String()
		if v.CanInterface() {
			switch x := v.Interface().(type) {
			case fmt.Stringer, error:
				val = fmt.Sprintf("%v", x)
			default:
				if v.Kind() == reflect.Func {
					val = "func"
				} else if v.Kind() == reflect.Pointer && !v.IsNil() && v.Elem().Kind() == reflect.Struct {
					val = "&" + v.Elem().Type().String() + "{…}"
				} else {
					val = fmt.Sprintf("%v", x)
				}
			}
		}
		if r := []rune(val); len(r) > 80 {
			val = string(r[:79]) + "…"
		}
		out = append(out, Var{Name: name, Type: typ, Value: val})
	}
	slices.SortFunc(out, func(a, b Var) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// LoadFile evaluates a script file in the session, cell by cell: a recipe's
// imports, declarations and the statements of its main function become
// session state (the inverse of Recipe); any other file is one cell. It
// returns the number of cells run.
func (it *Interpreter) LoadFile(ctx context.Context, path string) (int, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("load: %w", err)
	}
	cells, err := CellsFromSource(string(src))
	if err != nil {
		return 0, fmt.Errorf("load %s: %w", path, err)
	}
	for i, c := range cells {
		out, err := it.Eval(ctx, c)
		if err != nil {
			return i, fmt.Errorf("load %s: %w", path, err)
		}
		if out != "" {
			fmt.Fprintln(it.stdout, out)
		}
	}
	return len(cells), nil
}

// CellsFromSource splits a script into REPL cells. A Go main package gives
// its import declaration, its other top-level declarations, and the body
// of main (as one cell); other source is returned as a single cell.
func CellsFromSource(src string) ([]string, error) {
	if !isMainPackage(src) {
		return []string{src}, nil
	}
	fs := token.NewFileSet()
	f, err := parser.ParseFile(fs, "script", src, 0)
	if err != nil {
		return nil, err
	}
	var cells []string
	var mainBody string
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "main" && fd.Recv == nil {
			if fd.Body != nil && len(fd.Body.List) > 0 {
				mainBody = nodeSource(fs, &stmtRange{fd.Body.List[0].Pos(), fd.Body.List[len(fd.Body.List)-1].End()}, src)
			}
			continue
		}
		cells = append(cells, nodeSource(fs, d, src))
	}
	if mainBody != "" {
		cells = append(cells, dedent(mainBody))
	}
	return cells, nil
}

type stmtRange struct{ pos, end token.Pos }

func (r *stmtRange) Pos() token.Pos { return r.pos }
func (r *stmtRange) End() token.Pos { return r.end }

// dedent removes one leading tab from every line after the first.
func dedent(s string) string {
	lines := strings.Split(s, "\n")
	for i := 1; i < len(lines); i++ {
		lines[i] = strings.TrimPrefix(lines[i], "\t")
	}
	return strings.Join(lines, "\n")
}
