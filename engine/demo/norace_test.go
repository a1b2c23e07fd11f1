//go:build !race

package demo_test

// Semantic test size: both prompt forms, 3 images per digit, 12 sampler
// steps.
const (
	semanticForms = 2
	semanticBatch = 3
	semanticSteps = 12
)
