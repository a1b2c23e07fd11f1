package script

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"strings"
)

// Source rewrites that make Yaegi v0.16 behave as Go does, applied to the
// text handed to the interpreter (recorded cells and saved recipes keep
// the source as written). Every rewrite keeps the number of lines, so
// error lines still match the source.
//
//   - defer f(a, b): Yaegi evaluates a deferred call's arguments when the
//     function returns, not when the defer statement runs. The arguments
//     are copied first: _darkroomD1 := a; _darkroomD2 := b; defer f(_darkroomD1, _darkroomD2).
//     Yaegi also drops the ... of a deferred f(xs...): such a call is
//     deferred as a closure made by a call that copies the arguments:
//     _darkroomF2 := func() func() { _darkroomD1 := xs; return func() { f(_darkroomD1...) } }(); defer _darkroomF2().
//   - go f(a): a panic in a goroutine stops the process (and, in the REPL,
//     loses the session). The goroutine runs under a recover that reports
//     the panic instead: func() { _darkroomG1 := a; go func() { defer _darkroomRecover(); f(_darkroomG1) }() }()
//     (go f() needs no copies: go func() { defer _darkroomRecover(); f() }()),
//     and go func(...) { ... }(...) gets the deferred recover as its first
//     statement.
//
// Arguments that need no copy are left alone: literals and other constant
// expressions without names, nil, true and false, function literals, and
// a lone call argument (f(g()), whose g may return several values: it is
// still evaluated late). An argument holding a defer or go statement (in
// a function literal it calls) is not copied either.

// recoverName is the session function deferred by rewritten go statements.
const recoverName = "_darkroomRecover"

// edit replaces text[start:end] with repl.
type edit struct {
	start, end int
	repl       string
}

// rewriter collects the edits of one source text.
type rewriter struct {
	fs    *token.FileSet
	base  int // offset of the text in the parsed source (a wrapper's prefix)
	text  string
	next  func() uint64
	edits []edit
	// goStmts reports whether a go statement was rewritten (the text then
	// needs recoverName).
	goStmts bool
}

func (r *rewriter) off(p token.Pos) int { return r.fs.File(p).Offset(p) - r.base }

// rewriteText applies the defer and go rewrites to text, which parses as a
// file when wrapped in prefix + text + suffix. It returns text unchanged
// when it does not parse (Yaegi then reports the error) or holds nothing
// to rewrite. next numbers the temporaries.
func rewriteText(text, prefix, suffix string, next func() uint64) (out string, goStmts bool) {
	fs := token.NewFileSet()
	f, err := parser.ParseFile(fs, "src", prefix+text+suffix, parser.SkipObjectResolution)
	if err != nil {
		return text, false
	}
	r := &rewriter{fs: fs, base: len(prefix), text: text, next: next}
	ast.Inspect(f, func(n ast.Node) bool {
		switch st := n.(type) {
		case *ast.LabeledStmt:
			// A copy in front of a labelled statement would take its label.
			if _, ok := st.Stmt.(*ast.DeferStmt); ok {
				ast.Inspect(st.Stmt.(*ast.DeferStmt).Call, r.inspectInner)
				return false
			}
		case *ast.DeferStmt:
			r.deferStmt(st)
		case *ast.GoStmt:
			r.goStmt(st)
		}
		return true
	})
	if len(r.edits) == 0 {
		return text, false
	}
	return applyEdits(text, r.edits), r.goStmts
}

// inspectInner rewrites the statements nested in n (inside function
// literals).
func (r *rewriter) inspectInner(n ast.Node) bool {
	switch st := n.(type) {
	case *ast.DeferStmt:
		r.deferStmt(st)
	case *ast.GoStmt:
		r.goStmt(st)
	}
	return true
}

// copies returns the temporaries' definitions for the arguments of call
// that need a copy, and records the replacement of those arguments.
func (r *rewriter) copies(call *ast.CallExpr, kind string) string {
	if len(call.Args) == 1 {
		if _, ok := ast.Unparen(call.Args[0]).(*ast.CallExpr); ok {
			return ""
		}
	}
	var defs strings.Builder
	for _, a := range call.Args {
		if !needsCopy(a) {
			continue
		}
		name := "_darkroom" + kind + strconv.FormatUint(r.next(), 10)
		s, e := r.off(a.Pos()), r.off(a.End())
		defs.WriteString(name + " := " + r.text[s:e] + "; ")
		r.edits = append(r.edits, edit{s, e, name})
	}
	return defs.String()
}

func (r *rewriter) deferStmt(st *ast.DeferStmt) {
	defs := r.copies(st.Call, "D")
	p, s, e := r.off(st.Pos()), r.off(st.Call.Pos()), r.off(st.Call.End())
	if st.Call.Ellipsis.IsValid() {
		// Yaegi ignores the ... of a deferred call (f(xs...) gets xs as one
		// argument), and a closure shares the variables of a loop body: a
		// function call makes the copies, its closure is deferred.
		name := "_darkroomF" + strconv.FormatUint(r.next(), 10)
		r.edits = append(r.edits, edit{p, s, name + " := func() func() { " + defs + "return func() { "}, edit{e, e, " } }(); defer " + name + "()"})
		return
	}
	if defs != "" {
		r.edits = append(r.edits, edit{p, p, defs})
	}
}

func (r *rewriter) goStmt(st *ast.GoStmt) {
	r.goStmts = true
	// The session counts the goroutine before it starts (goStart) and
	// uncounts it when its recover has run, so that RunFile can wait for a
	// goroutine whose panic is unwinding when main returns.
	p := r.off(st.Pos())
	if lit, ok := ast.Unparen(st.Call.Fun).(*ast.FuncLit); ok {
		b := r.off(lit.Body.Lbrace) + 1
		r.edits = append(r.edits, edit{p, p, goStart}, edit{b, b, " defer " + recoverName + "();"})
		return
	}
	defs := r.copies(st.Call, "G")
	s, e := r.off(st.Call.Pos()), r.off(st.Call.End())
	wrap := "func() { defer " + recoverName + "(); "
	if defs == "" {
		r.edits = append(r.edits, edit{p, p, goStart}, edit{s, s, wrap}, edit{e, e, " }()"})
		return
	}
	// A closure shares the variables of a loop body in Yaegi: the copies
	// are made in a call of their own.
	r.edits = append(r.edits, edit{p, s, goStart + "func() { " + defs + "go " + wrap}, edit{e, e, " }() }()"})
}

// goStart counts a goroutine about to start (see goStmt).
const goStart = "_darkroomrt.GoStart(); "

// needsCopy reports whether a deferred call's argument must be evaluated
// before the defer statement (see the comment at the top).
func needsCopy(a ast.Expr) bool {
	if _, ok := ast.Unparen(a).(*ast.FuncLit); ok {
		return false // a closure: nothing to evaluate
	}
	names, nested := false, false
	ast.Inspect(a, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.DeferStmt, *ast.GoStmt:
			// Rewritten themselves; a copy would overlap their edits.
			nested = true
		case *ast.Ident:
			if x.Name != "nil" && x.Name != "true" && x.Name != "false" && x.Name != "iota" {
				names = true
			}
		}
		return !nested
	})
	return names && !nested
}

// applyEdits applies non-overlapping edits (insertions at one offset keep
// their order).
func applyEdits(text string, edits []edit) string {
	slices.SortStableFunc(edits, func(a, b edit) int { return a.start - b.start })
	var b strings.Builder
	at := 0
	for _, e := range edits {
		if e.start < at {
			continue // overlapping: keep the first
		}
		b.WriteString(text[at:e.start])
		b.WriteString(e.repl)
		at = e.end
	}
	b.WriteString(text[at:])
	return b.String()
}

// rewriteSegmentBuiltins is rewriteBuiltins for a segment of a cell.
func rewriteSegmentBuiltins(src string, next func() uint64, defined func(string) bool) (string, bool) {
	fs := token.NewFileSet()
	if _, err := parser.ParseFile(fs, "cell", "package main\n"+src, parser.SkipObjectResolution); err == nil {
		return rewriteBuiltins(src, "package main\n", "", next, defined)
	}
	return rewriteBuiltins(src, "package main\nfunc _() {\n", "\n}", next, defined)
}

// rewriteSegment rewrites one segment of a cell: declarations as a file,
// statements as the body of a function.
func rewriteSegment(src string, next func() uint64) (string, bool) {
	fs := token.NewFileSet()
	if _, err := parser.ParseFile(fs, "cell", "package main\n"+src, parser.SkipObjectResolution); err == nil {
		return rewriteText(src, "package main\n", "", next)
	}
	return rewriteText(src, "package main\nfunc _() {\n", "\n}", next)
}

// rtPath is the import path of the native helpers of rewritten code.
const rtPath = "github.com/darkroom-ai/darkroom/script/rt"

// recoverDecl defines recoverName; it needs rtPath imported as _darkroomrt.
const recoverDecl = "func " + recoverName + "() { defer _darkroomrt.GoEnd(); if p := recover(); p != nil { _darkroomrt.GoPanic(p) } }"

// rewriteFile rewrites a Go source file (a recipe). When go statements
// were rewritten, it imports the helpers and defines recoverName after the
// file's imports, on the same line (Yaegi v0.16 does not find a deferred
// function declared after its use).
func rewriteFile(src string, next func() uint64) string {
	out, goStmts := rewriteText(src, "", "", next)
	if !goStmts && !strings.Contains(out, "_darkroomrt.") {
		return out
	}
	fs := token.NewFileSet()
	f, err := parser.ParseFile(fs, "src", out, parser.ImportsOnly)
	if err != nil {
		return src
	}
	end := f.Name.End()
	for _, d := range f.Decls {
		if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.IMPORT {
			end = g.End()
		}
	}
	p := fs.File(end).Offset(end)
	helpers := "; import _darkroomrt " + strconv.Quote(rtPath)
	if goStmts {
		helpers += "; " + recoverDecl
	}
	return out[:p] + helpers + out[p:]
}

// nextID numbers the temporaries of rewritten statements.
func (it *Interpreter) nextID() uint64 { return it.seq.Add(1) }
