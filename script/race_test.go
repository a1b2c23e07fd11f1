//go:build race

package script

// raceDetector is true under -race: yaegi's interpreter resizes its frame
// when a cell is evaluated, unsynchronised with goroutines an earlier cell
// started that are still running, so tests that evaluate cells while such
// goroutines run cannot pass the race detector (a yaegi limitation; see
// docs/scripting.md).
const raceDetector = true
