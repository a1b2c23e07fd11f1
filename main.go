// Command darkroom generates images with Stable Diffusion models.
package main

import (
	"os"

	"github.com/darkroom-ai/darkroom/cmd"
)

func main() { os.Exit(cmd.Execute()) }
