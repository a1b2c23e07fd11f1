//go:build nodemo

package demo

// checkpointGz is empty in builds with the nodemo tag (test binaries
// carried to other machines, where the checkpoint file travels beside
// them); Open and Bytes then fail or return nothing.
var checkpointGz string
