//go:build !race

package upstream

// raceEnabled: the race detector is on (its builds have larger frames).
const raceEnabled = false
