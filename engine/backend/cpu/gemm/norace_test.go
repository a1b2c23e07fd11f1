//go:build !race

package gemm

// raceEnabled shrinks the tests when the race detector slows them down.
const raceEnabled = false
