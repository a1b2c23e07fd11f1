// Package tensor defines storage dtypes, shapes and host-side float32 tensors.
package tensor
