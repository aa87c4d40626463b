//go:build race

package soak

// raceDetector is true under -race, which makes everything several
// times slower: the witness's pace is then logged, not asserted.
const raceDetector = true
