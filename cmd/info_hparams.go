package cmd

import (
	"github.com/darkroom-ai/darkroom/engine/models/clip"
	"github.com/darkroom-ai/darkroom/engine/models/unet"
	"github.com/darkroom-ai/darkroom/engine/models/vae"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

// hyperparameters infers the component configurations of supported
// families from tensor shapes; a component whose configuration cannot be
// inferred is reported with the reason instead.
func hyperparameters(m *weights.Model, d weights.Detection) []hparamLine {
	if d.Family != weights.FamilySD1 {
		return nil
	}
	var lines []hparamLine
	line := func(component string, s interface{ String() string }, err error) {
		if err != nil {
			lines = append(lines, hparamLine{component, "cannot infer: " + err.Error()})
			return
		}
		lines = append(lines, hparamLine{component, s.String()})
	}
	u, err := unet.ConfigFromWeights(m, keymap.UNetPrefix)
	line("UNet", u, err)
	v, err := vae.ConfigFromWeights(m, keymap.VAEPrefix)
	line("VAE", v, err)
	c, err := clip.ConfigFromWeights(m, keymap.CLIPPrefix)
	line("text encoder", c, err)
	return lines
}
