//go:build race

package integration

// raceEnabled builds the binary under test with -race when the tests run
// with it, so the daemon's races fail the run too.
const raceEnabled = true
