//go:build race

package milter

const raceNote = "race detector on: memory figures are inflated"
