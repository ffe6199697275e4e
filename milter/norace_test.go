//go:build !race

package milter

const raceNote = "no race detector"
