//go:build !nodemo

package demo

import _ "embed"

// checkpoint is a string so that the embedded bytes cannot be modified.
//
//go:embed darkroom-digits.safetensors
var checkpoint string
