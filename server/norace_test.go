//go:build !race

package server

// raceDetector is true in test binaries built with -race.
const raceDetector = false
