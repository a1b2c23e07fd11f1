// Package deps holds no code: its test, deps_test.go, checks that the
// module's packages import each other only down the layer table written
// there, and the few rules beyond layering (cmd uses the engine's public
// API, the REPL does not import the TUI, the engine imports no frontend,
// samplers do not see models, families do not import each other), as
// golang/go's src/go/build/deps_test.go does for the standard library.
//
//	go test ./internal/deps
package deps
