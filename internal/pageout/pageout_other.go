//go:build !linux

package pageout

// Binary does nothing outside Linux.
func Binary() (int64, error) { return 0, nil }
