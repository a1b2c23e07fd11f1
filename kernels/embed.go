//go:build !nokernels

package kernels

import (
	"embed"
	"io/fs"
)

// embedded holds the fatbins.
//
//go:embed *.fatbin
var embedded embed.FS

// fatbins is what Modules reads.
var fatbins fs.FS = embedded
