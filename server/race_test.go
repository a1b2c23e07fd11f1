//go:build race

package server

// raceDetector is true in test binaries built with -race: the JetStream
// test's worker processes then run race-instrumented too, several times
// slower, and take fewer jobs.
const raceDetector = true
