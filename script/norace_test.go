//go:build !race

package script

// raceDetector is false without -race (see race_test.go).
const raceDetector = false
