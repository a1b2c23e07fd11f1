//go:build nokernels

package kernels

import "io/fs"

// fatbins is nil in builds with the nokernels tag (test binaries carried to
// a GPU machine together with the kernels folder): the CUDA backend then
// reads DARKROOM_CUDA_KERNELS.
var fatbins fs.FS
