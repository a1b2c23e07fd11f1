package script

import (
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
)

// The Go 1.21 builtins min, max and clear, which Yaegi v0.16 lacks, are
// rewritten before interpreting (on the same lines; the recorded source
// keeps them):
//
//   - clear(x) (a statement) becomes _darkroomrt.Clear(x), which clears a
//     map or zeroes a slice through reflect.
//   - x := min(a, b, 2) becomes _darkroomM1 := a; if _darkroomT2 := b; _darkroomT2 < _darkroomM1 { _darkroomM1 = _darkroomT2 }; if 2 < _darkroomM1 { _darkroomM1 = 2 }; x := _darkroomM1:
//     the call is computed by statements in front of the statement that
//     holds it. Constant arguments are compared as they are (so they take
//     the other arguments' type), and a call of constants only is folded
//     (min(1, 2.5) is 1). NaN arguments are not treated specially.
//
// A call that cannot be moved in front of its statement (in a for loop's
// condition or post statement, after && or ||, in an else if, in a
// package-level declaration, or a call of named constants only) is left
// alone, and missingBuiltins refuses it with a hint.

// rewriteBuiltins rewrites min, max and clear in text, which parses when
// wrapped in prefix and suffix. usesRT reports whether the result needs
// _darkroomrt imported.
func rewriteBuiltins(text, prefix, suffix string, next func() uint64, defined func(string) bool) (out string, usesRT bool) {
	// Nested calls (max(lo, min(v, hi))) take a pass each.
	for range 8 {
		var rt bool
		out, rt = rewriteBuiltinsOnce(text, prefix, suffix, next, defined)
		usesRT = usesRT || rt
		if out == text {
			break
		}
		text = out
	}
	return text, usesRT
}

func rewriteBuiltinsOnce(text, prefix, suffix string, next func() uint64, defined func(string) bool) (out string, usesRT bool) {
	if !strings.Contains(text, "min") && !strings.Contains(text, "max") && !strings.Contains(text, "clear") {
		return text, false
	}
	fs := token.NewFileSet()
	f, err := parser.ParseFile(fs, "src", prefix+text+suffix, parser.SkipObjectResolution)
	if err != nil {
		return text, false
	}
	declared := declaredNames(f)
	builtin := func(e ast.Expr, names ...string) (*ast.CallExpr, string) {
		call, ok := e.(*ast.CallExpr)
		if !ok {
			return nil, ""
		}
		id, ok := call.Fun.(*ast.Ident)
		if !ok || declared[id.Name] || (defined != nil && defined(id.Name)) {
			return nil, ""
		}
		for _, n := range names {
			if id.Name == n && !call.Ellipsis.IsValid() {
				return call, n
			}
		}
		return nil, ""
	}
	r := &rewriter{fs: fs, base: len(prefix), text: text, next: next}
	var lists [][]ast.Stmt
	ast.Inspect(f, func(n ast.Node) bool {
		switch b := n.(type) {
		case *ast.BlockStmt:
			lists = append(lists, b.List)
		case *ast.CaseClause:
			lists = append(lists, b.Body)
		case *ast.CommClause:
			lists = append(lists, b.Body)
		case *ast.ExprStmt:
			if call, _ := builtin(b.X, "clear"); call != nil && len(call.Args) == 1 {
				p := r.off(call.Fun.Pos())
				r.edits = append(r.edits, edit{p, r.off(call.Fun.End()), "_darkroomrt.Clear"})
				usesRT = true
			}
		}
		return true
	})
	for _, list := range lists {
		for _, st := range list {
			var hoist strings.Builder
			for _, call := range hoistable(st, builtin) {
				_, name := builtin(call, "min", "max")
				if folded, ok := foldConstants(call, name); ok {
					r.edits = append(r.edits, edit{r.off(call.Pos()), r.off(call.End()), folded})
					continue
				}
				seed := -1
				for i, a := range call.Args {
					if !isConstant(a) {
						seed = i
						break
					}
				}
				if seed < 0 {
					continue // named constants only: left to the hint
				}
				op := "<"
				if name == "max" {
					op = ">"
				}
				m := "_darkroomM" + strconv.FormatUint(next(), 10)
				hoist.WriteString(m + " := " + r.src(call.Args[seed]) + "; ")
				for i, a := range call.Args {
					if i == seed {
						continue
					}
					if isConstant(a) {
						hoist.WriteString(sprintf("if %s %s %s { %s = %s }; ", r.src(a), op, m, m, r.src(a)))
						continue
					}
					t := "_darkroomT" + strconv.FormatUint(next(), 10)
					hoist.WriteString(sprintf("if %s := %s; %s %s %s { %s = %s }; ", t, r.src(a), t, op, m, m, t))
				}
				r.edits = append(r.edits, edit{r.off(call.Pos()), r.off(call.End()), m})
			}
			if hoist.Len() > 0 {
				p := r.off(st.Pos())
				r.edits = append(r.edits, edit{p, p, hoist.String()})
			}
		}
	}
	if len(r.edits) == 0 {
		return text, false
	}
	return applyEdits(text, r.edits), usesRT
}

func sprintf(format string, args ...string) string {
	for _, a := range args {
		format = strings.Replace(format, "%s", a, 1)
	}
	return format
}

func (r *rewriter) src(e ast.Expr) string { return r.text[r.off(e.Pos()):r.off(e.End())] }

// hoistable returns the min and max calls of statement st that can be
// computed in front of it (outermost calls only, whose arguments hold no
// other such call).
func hoistable(st ast.Stmt, builtin func(ast.Expr, ...string) (*ast.CallExpr, string)) []*ast.CallExpr {
	switch s := st.(type) {
	case *ast.AssignStmt, *ast.ExprStmt, *ast.ReturnStmt, *ast.DeclStmt, *ast.IncDecStmt, *ast.SendStmt, *ast.DeferStmt, *ast.GoStmt:
	case *ast.IfStmt:
		if s.Else != nil {
			if _, ok := s.Else.(*ast.IfStmt); ok {
				return nil // the else if's condition runs only after the first
			}
		}
		return hoistIn(builtin, s.Init, s.Cond)
	case *ast.SwitchStmt:
		return hoistIn(builtin, s.Init, s.Tag)
	default:
		return nil
	}
	return hoistIn(builtin, st)
}

func hoistIn(builtin func(ast.Expr, ...string) (*ast.CallExpr, string), nodes ...ast.Node) []*ast.CallExpr {
	var out []*ast.CallExpr
	bad := false
	for _, n := range nodes {
		if n == nil || isNilNode(n) {
			continue
		}
		ast.Inspect(n, func(m ast.Node) bool {
			switch x := m.(type) {
			case *ast.FuncLit:
				return false // its statements are rewritten in its body
			case *ast.BinaryExpr:
				if x.Op == token.LAND || x.Op == token.LOR {
					// The right side may not run.
					ast.Inspect(x.Y, func(k ast.Node) bool {
						if e, ok := k.(ast.Expr); ok {
							if c, _ := builtin(e, "min", "max"); c != nil {
								bad = true
							}
						}
						return true
					})
				}
			case *ast.CallExpr:
				if c, _ := builtin(x, "min", "max"); c != nil {
					nested := false
					for _, a := range c.Args {
						ast.Inspect(a, func(k ast.Node) bool {
							if e, ok := k.(ast.Expr); ok {
								if c2, _ := builtin(e, "min", "max"); c2 != nil {
									nested = true
								}
							}
							if _, ok := k.(*ast.FuncLit); ok {
								nested = true
							}
							return !nested
						})
					}
					if nested {
						return true // the inner calls first; this one in the next pass
					}
					out = append(out, c)
					return false
				}
			}
			return true
		})
	}
	if bad {
		return nil
	}
	return out
}

func isNilNode(n ast.Node) bool {
	switch x := n.(type) {
	case ast.Stmt:
		return x == nil
	case ast.Expr:
		return x == nil
	}
	return false
}

// isConstant reports whether e is a constant expression without names.
func isConstant(e ast.Expr) bool {
	names := false
	ast.Inspect(e, func(n ast.Node) bool {
		switch n.(type) {
		case *ast.Ident, *ast.CallExpr, *ast.CompositeLit, *ast.FuncLit, *ast.IndexExpr, *ast.SelectorExpr, *ast.StarExpr, *ast.UnaryExpr:
			if u, ok := n.(*ast.UnaryExpr); ok && (u.Op == token.SUB || u.Op == token.ADD) {
				return true
			}
			names = true
		}
		return !names
	})
	return !names
}

// foldConstants computes min or max of literal arguments (with + and -);
// the result is a float when one argument is (min(1, 2.5) is 1.0).
func foldConstants(call *ast.CallExpr, name string) (string, bool) {
	op := token.LSS
	if name == "max" {
		op = token.GTR
	}
	var best constant.Value
	float := false
	for _, a := range call.Args {
		v, ok := literalValue(a)
		if !ok {
			return "", false
		}
		float = float || v.Kind() == constant.Float
		if best == nil || constant.Compare(v, op, best) {
			best = v
		}
	}
	if best == nil {
		return "", false
	}
	if !float {
		return "(" + best.ExactString() + ")", true
	}
	f, _ := constant.Float64Val(constant.ToFloat(best))
	out := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(out, ".eIN") {
		out += ".0"
	}
	return "(" + out + ")", true
}

func literalValue(e ast.Expr) (constant.Value, bool) {
	switch x := ast.Unparen(e).(type) {
	case *ast.BasicLit:
		v := constant.MakeFromLiteral(x.Value, x.Kind, 0)
		return v, v.Kind() != constant.Unknown
	case *ast.UnaryExpr:
		if x.Op != token.SUB && x.Op != token.ADD {
			return nil, false
		}
		v, ok := literalValue(x.X)
		if !ok {
			return nil, false
		}
		return constant.UnaryOp(x.Op, v, 0), true
	}
	return nil, false
}

// declaredNames are the names a parsed file or cell declares (functions,
// variables, parameters), which shadow the builtins.
func declaredNames(n ast.Node) map[string]bool {
	declared := map[string]bool{}
	ast.Inspect(n, func(m ast.Node) bool {
		switch d := m.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil {
				declared[d.Name.Name] = true
			}
		case *ast.AssignStmt:
			if d.Tok == token.DEFINE {
				for _, e := range d.Lhs {
					if id, ok := e.(*ast.Ident); ok {
						declared[id.Name] = true
					}
				}
			}
		case *ast.ValueSpec:
			for _, id := range d.Names {
				declared[id.Name] = true
			}
		case *ast.Field:
			for _, id := range d.Names {
				declared[id.Name] = true
			}
		}
		return true
	})
	return declared
}
