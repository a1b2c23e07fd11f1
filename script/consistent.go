package script

import (
	"go/ast"
	"go/parser"
	"go/token"
)

// A saved recipe must run: a cell that ran is recorded only with the cells
// it depends on. A failed or interrupted cell is not recorded, yet what
// its statements did persists (res, err := m.Generate(...) interrupted by
// Ctrl-C defines res). The names such a cell defines or assigns are
// tainted; a later cell that uses a tainted name is not recorded either,
// and taints the names it defines or assigns in turn. A recorded cell
// that defines a name anew (without using it) clears it.

// cellNames are the session names one segment touches.
type cellNames struct {
	// defs are the names defined at the segment's top level (x := ...,
	// var, const, func and type declarations).
	defs []string
	// assigns are the variables it assigns anywhere (x = ..., x++, x.f = ...).
	assigns []string
	// uses are the other names it mentions.
	uses map[string]bool
}

// namesOf returns the names segment src touches; ok is false when it does
// not parse.
func namesOf(src string) (cellNames, bool) {
	n := cellNames{uses: map[string]bool{}}
	fs := token.NewFileSet()
	var root ast.Node
	var top []ast.Node
	if f, err := parser.ParseFile(fs, "cell", "package main\n"+src, parser.SkipObjectResolution); err == nil {
		root = f
		for _, d := range f.Decls {
			top = append(top, d)
		}
	} else if f, err := parser.ParseFile(fs, "cell", "package main\nfunc _() {\n"+src+"\n}", parser.SkipObjectResolution); err == nil {
		body := f.Decls[0].(*ast.FuncDecl).Body
		root = body
		for _, st := range body.List {
			top = append(top, st)
		}
	} else {
		return n, false
	}
	defSite := map[*ast.Ident]bool{}
	def := func(id *ast.Ident) {
		if id != nil && id.Name != "_" {
			n.defs = append(n.defs, id.Name)
			defSite[id] = true
		}
	}
	// defSpecs records the types and variables a declaration defines
	// (imports are only marked as definition sites: they are recorded even
	// from failed cells).
	defSpecs := func(g *ast.GenDecl) {
		for _, sp := range g.Specs {
			switch sp := sp.(type) {
			case *ast.TypeSpec:
				def(sp.Name)
			case *ast.ValueSpec:
				for _, id := range sp.Names {
					def(id)
				}
			case *ast.ImportSpec:
				ast.Inspect(sp, func(m ast.Node) bool {
					if id, ok := m.(*ast.Ident); ok {
						defSite[id] = true
					}
					return true
				})
			}
		}
	}
	for _, t := range top {
		switch d := t.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil {
				def(d.Name)
			}
		case *ast.GenDecl:
			defSpecs(d)
		case *ast.DeclStmt:
			if g, ok := d.Decl.(*ast.GenDecl); ok {
				defSpecs(g)
			}
		case *ast.AssignStmt:
			if d.Tok == token.DEFINE {
				for _, e := range d.Lhs {
					if id, ok := e.(*ast.Ident); ok {
						def(id)
					}
				}
			}
		}
	}
	ast.Inspect(root, func(m ast.Node) bool {
		switch x := m.(type) {
		case *ast.AssignStmt:
			if x.Tok != token.DEFINE {
				for _, e := range x.Lhs {
					if id := rootIdent(e); id != nil {
						n.assigns = append(n.assigns, id.Name)
					}
				}
			}
		case *ast.IncDecStmt:
			if id := rootIdent(x.X); id != nil {
				n.assigns = append(n.assigns, id.Name)
			}
		case *ast.Ident:
			if !defSite[x] && x.Name != "_" {
				n.uses[x.Name] = true
			}
		}
		return true
	})
	return n, true
}

// rootIdent returns the variable an assignment's left side changes: x in
// x, x.f, x[i], *x.
func rootIdent(e ast.Expr) *ast.Ident {
	for {
		switch x := e.(type) {
		case *ast.Ident:
			return x
		case *ast.SelectorExpr:
			e = x.X
		case *ast.IndexExpr:
			e = x.X
		case *ast.StarExpr:
			e = x.X
		case *ast.ParenExpr:
			e = x.X
		default:
			return nil
		}
	}
}

// dependsOnTainted reports whether one of segs uses a tainted name.
// Unparsable segments count as dependent only if they mention one.
func (it *Interpreter) dependsOnTainted(segs []string) bool {
	if len(it.tainted) == 0 {
		return false
	}
	for _, s := range segs {
		n, ok := namesOf(s)
		for name := range it.tainted {
			if ok && n.uses[name] || !ok && usesName(s, name) {
				return true
			}
		}
	}
	return false
}

// taint marks the names segs define or assign.
func (it *Interpreter) taint(segs []string) {
	if it.tainted == nil {
		it.tainted = map[string]bool{}
	}
	for _, s := range segs {
		n, _ := namesOf(s)
		for _, name := range append(n.defs, n.assigns...) {
			it.tainted[name] = true
		}
	}
}

// untaint clears the names a recorded cell's segments define.
func (it *Interpreter) untaint(segs []string) {
	for _, s := range segs {
		n, _ := namesOf(s)
		for _, name := range n.defs {
			delete(it.tainted, name)
		}
	}
}
