// Command e2e runs the TUI on the real engine for end-to-end tests (the
// darkroom binary's entry point is wired in cmd/).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/darkroom-ai/darkroom/tui"
)

func main() {
	var o tui.Options
	models := flag.String("models", "", "model directories, comma-separated")
	flag.StringVar(&o.Model, "model", "", "preselected model")
	flag.StringVar(&o.Graphics, "graphics", "auto", "auto|kitty|sixel|iterm|halfblock|none")
	flag.StringVar(&o.OutputDir, "out", ".", "output directory")
	flag.StringVar(&o.LogFile, "log", "", "log file")
	flag.Parse()
	if *models != "" {
		o.ModelDirs = strings.Split(*models, ",")
	}
	if err := tui.Run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "darkroom:", err)
		os.Exit(1)
	}
}
