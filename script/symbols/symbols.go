// Package symbols holds the yaegi symbol tables of the darkroom packages
// scripts can import (engine, engine/grid, parts of engine/sampling and
// engine/rng, script/dr). The tables are generated; run `go generate
// ./script/symbols` after changing an exposed package's API.
package symbols

import "reflect"

//go:generate go run gen.go

// Symbols maps "importpath/name" to the package's exported symbols, as
// interp.Use expects.
var Symbols = map[string]map[string]reflect.Value{}
