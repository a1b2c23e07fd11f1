//go:build race

package demo_test

// Under the race detector the CPU kernels run many times slower: one prompt
// form, one image per digit and fewer steps keep the package under its time
// budget.
const (
	semanticForms = 1
	semanticBatch = 1
	semanticSteps = 8
)
