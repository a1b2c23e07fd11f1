//go:build !nodemo

package demo

import _ "embed"

// checkpointGz is the gzip-compressed checkpoint, a string so that the
// embedded bytes cannot be modified.
//
//go:embed darkroom-digits.safetensors.gz
var checkpointGz string
