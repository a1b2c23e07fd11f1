package script

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/scanner"
	"go/token"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/traefik/yaegi/interp"
)

// segment is one top-level statement or declaration of a cell. Yaegi
// decides between "file of declarations" and "statements" from the first
// token of its input, so a cell is evaluated segment by segment.
type segment struct {
	src  string
	line int // 1-based line of the segment in the cell
	// expr reports whether the segment is an expression statement, and
	// print whether that expression is a print call (whose value is not
	// echoed).
	expr, print bool
}

// compound reports whether the segment is a compound statement (for, if,
// switch, select or a block). Yaegi v0.16 loses variables defined by a
// multi-value := (res, err := f()) in a block at the top level of the REPL
// but not inside a declared function, so Eval runs compound statements as
// the body of a generated function (a function literal would break calls
// of session functions that use session variables).
func (s segment) compound() bool {
	switch firstToken(s.src) {
	case token.FOR, token.IF, token.SWITCH, token.SELECT, token.LBRACE:
		return true
	case token.GO, token.DEFER:
		// The rewritten go statement (see rewrite.go) calls a function
		// literal; evaluated at the top level, it ran again with later
		// cells (Yaegi v0.16), and so did a top-level defer. A cell's
		// defer runs when its statement's generated function returns.
		return true
	}
	return false
}

// wrap adds the cell line to an evaluation error.
func (s segment) wrap(err error) error {
	var le *lineError
	if errors.As(err, &le) {
		le.line += s.line - 1
		return err
	}
	return err
}

// lineError is an error at a line of a cell.
type lineError struct {
	line int
	msg  string
	hint string
}

func (e *lineError) Error() string {
	s := fmt.Sprintf("line %d: %s", e.line, e.msg)
	if e.hint != "" {
		s += "\nhint: " + e.hint
	}
	return s
}

// Incomplete reports whether src needs more lines before it can be
// evaluated: an open bracket, brace or parenthesis, an unterminated raw
// string or comment, or a trailing binary operator.
func Incomplete(src string) bool {
	if strings.TrimSpace(src) == "" {
		return false
	}
	fs := token.NewFileSet()
	f := fs.AddFile("cell", -1, len(src))
	var open bool
	var s scanner.Scanner
	s.Init(f, []byte(src), func(_ token.Position, msg string) {
		if strings.Contains(msg, "not terminated") {
			open = true
		}
	}, 0)
	depth := 0
	last := token.ILLEGAL
	for {
		_, tok, _ := s.Scan()
		if tok == token.EOF {
			break
		}
		switch tok {
		case token.LPAREN, token.LBRACE, token.LBRACK:
			depth++
		case token.RPAREN, token.RBRACE, token.RBRACK:
			depth--
		}
		last = tok
	}
	if open || depth > 0 {
		return true
	}
	// The scanner inserts a semicolon after a line's final token when Go
	// would; without one the statement continues (x := a +).
	return last != token.SEMICOLON && last != token.ILLEGAL && depth == 0 && last.IsOperator() && last != token.RPAREN && last != token.RBRACE && last != token.RBRACK && last != token.INC && last != token.DEC
}

// splitCell cuts a cell into top-level segments at semicolons (explicit or
// automatic) outside brackets.
func splitCell(src string) ([]segment, error) {
	fs := token.NewFileSet()
	f := fs.AddFile("cell", -1, len(src))
	var errs scanner.ErrorList
	var s scanner.Scanner
	s.Init(f, []byte(src), func(pos token.Position, msg string) { errs.Add(pos, msg) }, 0)
	var segs []segment
	depth, start := 0, -1
	// header is set between a for/if/switch/select keyword and its body's
	// brace, where semicolons separate clauses, not statements.
	header := false
	flush := func(end int) {
		if start < 0 {
			return
		}
		text := strings.TrimSpace(src[start:end])
		if text != "" {
			seg := segment{src: text, line: f.Line(f.Pos(start))}
			seg.expr, seg.print = classify(text)
			segs = append(segs, seg)
		}
		start = -1
	}
	for {
		pos, tok, lit := s.Scan()
		if tok == token.EOF {
			flush(len(src))
			break
		}
		off := f.Offset(pos)
		switch tok {
		case token.FOR, token.IF, token.SWITCH, token.SELECT:
			if depth == 0 {
				header = true
			}
		case token.LBRACE:
			if depth == 0 {
				header = false
			}
			depth++
		case token.LPAREN, token.LBRACK:
			depth++
		case token.RPAREN, token.RBRACE, token.RBRACK:
			depth--
		case token.SEMICOLON:
			if depth == 0 && !header {
				if lit == "\n" && off >= len(src) {
					off = len(src)
				}
				flush(off)
				continue
			}
		}
		if start < 0 {
			start = off
		}
	}
	if len(errs) > 0 {
		e := errs[0]
		return nil, &lineError{line: e.Pos.Line, msg: e.Msg}
	}
	return segs, nil
}

// classify reports whether a segment is an expression statement, and
// whether it is a print call.
func classify(src string) (expr, print bool) {
	e, err := parser.ParseExpr(src)
	if err != nil {
		return false, false
	}
	call, ok := e.(*ast.CallExpr)
	if !ok {
		return true, false
	}
	switch fn := call.Fun.(type) {
	case *ast.Ident:
		return true, fn.Name == "print" || fn.Name == "println"
	case *ast.SelectorExpr:
		if x, ok := fn.X.(*ast.Ident); ok && x.Name == "fmt" {
			name := fn.Sel.Name
			return true, strings.HasPrefix(name, "Print") || strings.HasPrefix(name, "Fprint")
		}
	}
	// Calls are echoed only when they return something; Yaegi yields an
	// invalid value otherwise.
	return true, false
}

// parseCell parses a cell for static checks: as a file when it holds only
// declarations, else as the body of a function. It returns nil when the
// cell does not parse either way (Yaegi then reports the error).
func parseCell(src string) (*token.FileSet, ast.Node, int) {
	fs := token.NewFileSet()
	if f, err := parser.ParseFile(fs, "cell", "package main\n"+src, 0); err == nil {
		return fs, f, 1
	}
	if f, err := parser.ParseFile(fs, "cell", "package main\nfunc _() {\n"+src+"\n}", 0); err == nil {
		return fs, f, 2
	}
	return fs, nil, 0
}

// Gap hints: constructs of Go ≥ 1.21 that Yaegi v0.16 does not support.
const (
	hintRange    = "yaegi (v0.16) cannot range over an integer or a function (Go 1.22/1.23); write for i := 0; i < n; i++ { ... }"
	hintBuiltins = "yaegi (v0.16) lacks the min, max and clear builtins (Go 1.21); darkroom computes min and max in front of the statement holding them, which it cannot do in a for condition or post statement, right of && or ||, in an else if, in a package-level var, or with named constants only: compute the value in a statement before (lim := min(n, 10)), or define func min(a, b int) int in the script"
	hintLoopVar  = "yaegi (v0.16) shares one loop variable across iterations (pre-Go 1.22); copy it inside the loop (i := i) before capturing it"
	hintImport   = "scripts may import the standard library (without os/exec, unsafe, syscall and plugin) and darkroom's engine, engine/grid, engine/sampling, engine/rng and script/dr"
)

// checkGaps rejects, before running anything, ranges over integer
// literals and function literals, which make Yaegi panic.
func checkGaps(src string) error {
	fs, n, skip := parseCell(src)
	if n == nil {
		return nil
	}
	var err error
	ast.Inspect(n, func(n ast.Node) bool {
		r, ok := n.(*ast.RangeStmt)
		if !ok || err != nil {
			return err == nil
		}
		switch x := r.X.(type) {
		case *ast.BasicLit:
			if x.Kind == token.INT {
				err = &lineError{line: fs.Position(r.Pos()).Line - skip, msg: "range over an integer is not supported", hint: hintRange}
			}
		case *ast.FuncLit:
			err = &lineError{line: fs.Position(r.Pos()).Line - skip, msg: "range over a function is not supported", hint: hintRange}
		}
		return true
	})
	return err
}

// missingBuiltins finds calls of the Go 1.21 builtins min, max and clear,
// which Yaegi v0.16 lacks and reports confusingly ("constant definition
// loop" for x := min(1, 2), a conversion error later), in a parsed cell
// or file n. Names n declares itself, and those defined reports as
// defined (by an earlier cell), are not builtins.
func missingBuiltins(fs *token.FileSet, n ast.Node, skip int, defined func(name string) bool) error {
	if n == nil {
		return nil
	}
	declared := declaredNames(n)
	var err error
	ast.Inspect(n, func(m ast.Node) bool {
		call, ok := m.(*ast.CallExpr)
		if !ok || err != nil {
			return err == nil
		}
		id, ok := call.Fun.(*ast.Ident)
		if !ok || (id.Name != "min" && id.Name != "max" && id.Name != "clear") || declared[id.Name] || (defined != nil && defined(id.Name)) {
			return true
		}
		err = &lineError{line: fs.Position(call.Pos()).Line - skip, msg: "the builtin " + id.Name + " is not available in scripts here", hint: hintBuiltins}
		return true
	})
	return err
}

// loopVarWarnings finds closures in loop bodies that use the loop's
// variables, whose meaning differs under Yaegi's
// pre-Go 1.22 loop semantics.
func loopVarWarnings(src string) []string {
	fs, n, skip := parseCell(src)
	return loopVarWarningsNode(fs, n, skip)
}

// loopVarWarningsFile is loopVarWarnings for a whole Go file.
func loopVarWarningsFile(src string) []string {
	fs := token.NewFileSet()
	f, err := parser.ParseFile(fs, "script", src, 0)
	if err != nil {
		return nil
	}
	return loopVarWarningsNode(fs, f, 0)
}

func loopVarWarningsNode(fs *token.FileSet, n ast.Node, skip int) []string {
	if n == nil {
		return nil
	}
	var out []string
	ast.Inspect(n, func(n ast.Node) bool {
		var vars []string
		var body *ast.BlockStmt
		switch l := n.(type) {
		case *ast.ForStmt:
			if a, ok := l.Init.(*ast.AssignStmt); ok && a.Tok == token.DEFINE {
				for _, e := range a.Lhs {
					if id, ok := e.(*ast.Ident); ok && id.Name != "_" {
						vars = append(vars, id.Name)
					}
				}
			}
			body = l.Body
		case *ast.RangeStmt:
			if l.Tok == token.DEFINE {
				for _, e := range []ast.Expr{l.Key, l.Value} {
					if id, ok := e.(*ast.Ident); ok && id.Name != "_" {
						vars = append(vars, id.Name)
					}
				}
			}
			body = l.Body
		default:
			return true
		}
		if len(vars) == 0 || body == nil {
			return true
		}
		// Loop variables copied in the body (i := i) are safe.
		copied := map[string]bool{}
		for _, st := range body.List {
			if a, ok := st.(*ast.AssignStmt); ok && a.Tok == token.DEFINE {
				for _, e := range a.Lhs {
					if id, ok := e.(*ast.Ident); ok {
						copied[id.Name] = true
					}
				}
			}
		}
		ast.Inspect(body, func(m ast.Node) bool {
			var inner ast.Node
			switch c := m.(type) {
			case *ast.FuncLit:
				inner = c.Body
			default:
				// go f(v) copies v at the go statement (see rewrite.go);
				// go func() { ... }() is a function literal.
				return true
			}
			for _, v := range vars {
				if copied[v] || !uses(inner, v) {
					continue
				}
				out = append(out, fmt.Sprintf("line %d: the closure uses loop variable %s; %s", fs.Position(m.Pos()).Line-skip, v, hintLoopVar))
			}
			return false
		})
		return true
	})
	return out
}

func uses(n ast.Node, name string) bool {
	found := false
	ast.Inspect(n, func(m ast.Node) bool {
		if id, ok := m.(*ast.Ident); ok && id.Name == name {
			found = true
		}
		return !found
	})
	return found
}

// yaegiPos matches the position Yaegi puts in front of its messages:
// "1:28: msg" or "_.go:1:31: msg".
var yaegiPos = regexp.MustCompile(`^(?:[^\s:]*\.go:)?(\d+):(\d+): `)

// cleanError turns a Yaegi error or panic into a lineError (or a one-line
// error) with a hint for the known gaps.
func cleanError(err error) error {
	var p interp.Panic
	if errors.As(err, &p) {
		e := panicMessage(p.Value)
		msg := e.Error()
		if m := yaegiPos.FindStringSubmatch(msg); m != nil {
			msg = msg[len(m[0]):]
		}
		// Yaegi reports some runtime errors through reflect.
		for from, to := range map[string]string{
			"reflect: slice index out of range":                  "index out of range",
			"reflect: array index out of range":                  "index out of range",
			"reflect: string index out of range":                 "index out of range",
			"reflect: call of reflect.Value.Field on zero Value": "nil pointer dereference",
			"reflect: call of reflect.Value.Elem on zero Value":  "nil pointer dereference",
		} {
			msg = strings.Replace(msg, from, to, 1)
		}
		if strings.Contains(msg, "nil type") {
			return &lineError{line: 1, msg: "yaegi could not compile this cell (" + msg + ")", hint: hintRange}
		}
		if msg != e.Error() {
			return errors.New(msg)
		}
		return e
	}
	msg := err.Error()
	le := &lineError{line: 1, msg: msg}
	if m := yaegiPos.FindStringSubmatch(msg); m != nil {
		le.line, _ = strconv.Atoi(m[1])
		le.msg = msg[len(m[0]):]
	}
	// Yaegi's unhelpful messages and the known gaps.
	if le.msg == "constant definition loop" {
		le.msg = "undefined name or definition loop (yaegi: constant definition loop)"
	}
	switch {
	case regexp.MustCompile(`undefined: (min|max|clear)$`).MatchString(le.msg):
		le.hint = hintBuiltins
	case strings.Contains(le.msg, "cannot range over"):
		le.hint = hintRange
	case strings.Contains(le.msg, "unable to find source related to"):
		if m := regexp.MustCompile(`import ("[^"]+")`).FindStringSubmatch(le.msg); m != nil {
			le.msg = "cannot import " + m[1]
		}
		le.hint = hintImport
	}
	return le
}

// probeRange catches `for ... range n` where n is a variable of an earlier
// cell holding an integer or a function, which Yaegi cannot compile (and
// reports only as a panic). Names defined inside the segment are not
// probed.
func (it *Interpreter) probeRange(src string) error {
	fs, n, skip := parseCell(src)
	if n == nil {
		return nil
	}
	defined := map[string]bool{}
	ast.Inspect(n, func(m ast.Node) bool {
		switch d := m.(type) {
		case *ast.AssignStmt:
			if d.Tok == token.DEFINE {
				for _, e := range d.Lhs {
					if id, ok := e.(*ast.Ident); ok {
						defined[id.Name] = true
					}
				}
			}
		case *ast.ValueSpec:
			for _, id := range d.Names {
				defined[id.Name] = true
			}
		case *ast.Field:
			for _, id := range d.Names {
				defined[id.Name] = true
			}
		case *ast.FuncDecl:
			defined[d.Name.Name] = true
		}
		return true
	})
	var err error
	ast.Inspect(n, func(m ast.Node) bool {
		r, ok := m.(*ast.RangeStmt)
		if !ok || err != nil {
			return err == nil
		}
		id, ok := r.X.(*ast.Ident)
		if !ok || defined[id.Name] {
			return true
		}
		v, perr := it.evalQuiet(id.Name)
		if perr != nil || !v.IsValid() {
			return true
		}
		switch v.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
			err = &lineError{line: fs.Position(r.Pos()).Line - skip, msg: fmt.Sprintf("range over the integer %s is not supported", id.Name), hint: hintRange}
		case reflect.Func:
			err = &lineError{line: fs.Position(r.Pos()).Line - skip, msg: fmt.Sprintf("range over the function %s is not supported", id.Name), hint: hintRange}
		}
		return true
	})
	return err
}

// evalQuiet evaluates a side-effect-free expression (an identifier),
// recovering Yaegi panics.
func (it *Interpreter) evalQuiet(src string) (v reflect.Value, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return it.yi.Eval(src)
}

// isVoidCall reports whether src is a call of a function without results
// (Yaegi yields a stale value for those). Only callees that are names or
// selector chains (pkg.F, x.Method) are probed, since evaluating them has
// no side effects.
func (it *Interpreter) isVoidCall(src string) bool {
	e, err := parser.ParseExpr(src)
	if err != nil {
		return false
	}
	call, ok := e.(*ast.CallExpr)
	if !ok || !isNameChain(call.Fun) {
		return false
	}
	v, err := it.evalQuiet(src[call.Fun.Pos()-1 : call.Fun.End()-1])
	if err != nil || !v.IsValid() || v.Kind() != reflect.Func {
		return false
	}
	return v.Type().NumOut() == 0
}

func isNameChain(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.Ident:
		return true
	case *ast.SelectorExpr:
		return isNameChain(e.X)
	}
	return false
}

// rebind works around a Yaegi v0.16 bug: a session variable defined by a
// multi-value := from a call (m, err := eng.Load(...)) is not seen by a
// function called from another function. Redefining each name from a
// temporary gives it a sound binding.
func (it *Interpreter) rebind(ctx context.Context, src string) error {
	f, err := parser.ParseFile(token.NewFileSet(), "", "package main\nfunc _() {\n"+src+"\n}", 0)
	if err != nil {
		return nil
	}
	body := f.Decls[0].(*ast.FuncDecl).Body.List
	if len(body) != 1 {
		return nil
	}
	a, ok := body[0].(*ast.AssignStmt)
	if !ok || a.Tok != token.DEFINE || len(a.Lhs) < 2 || len(a.Rhs) != 1 {
		return nil
	}
	for _, e := range a.Lhs {
		id, ok := e.(*ast.Ident)
		if !ok || id.Name == "_" {
			continue
		}
		tmp := "_darkroomTmp" + strconv.FormatUint(it.seq.Add(1), 10)
		for _, st := range []string{tmp + " := " + id.Name, id.Name + " := " + tmp} {
			if _, err := it.evalSegment(ctx, st); err != nil {
				return fmt.Errorf("rebind %s: %w", id.Name, err)
			}
		}
	}
	return nil
}

// newImports drops the imports of an import declaration that the session
// already has under the same name (Yaegi rejects a repeated import), and
// returns the declaration of the others with a function that records them
// once they were imported. It returns "" when nothing is left to import.
func (it *Interpreter) newImports(src string) (string, func()) {
	f, err := parser.ParseFile(token.NewFileSet(), "", "package main\n"+src, parser.ImportsOnly)
	if err != nil || len(f.Decls) != 1 {
		return src, func() {} // let Yaegi report it
	}
	var keep []string
	added := map[string]string{}
	for _, imp := range f.Imports {
		p, err := strconv.Unquote(imp.Path.Value)
		if err != nil {
			return src, func() {}
		}
		name := ""
		if imp.Name != nil {
			name = imp.Name.Name
		}
		if prev, ok := it.imported[p]; ok && prev == name {
			continue
		}
		added[p] = name
		keep = append(keep, strings.TrimSpace(name+" "+imp.Path.Value))
	}
	if len(keep) == 0 {
		return "", func() {}
	}
	return "import (\n\t" + strings.Join(keep, "\n\t") + "\n)", func() {
		for p, name := range added {
			it.imported[p] = name
		}
	}
}
