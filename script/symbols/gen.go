//go:build ignore

// gen.go writes the yaegi symbol tables of package symbols; run it with
// `go generate ./script/symbols`.
package main

import (
	"fmt"
	"os"

	"github.com/darkroom-ai/darkroom/script/internal/gensym"
)

func main() {
	files, err := gensym.Generate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	for name, src := range files {
		if err := os.WriteFile(name, src, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
	}
}
