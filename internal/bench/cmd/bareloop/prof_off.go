//go:build !benchprof

package main

// startProfiling does nothing in the measured build: see prof_on.go.
func startProfiling() {}
