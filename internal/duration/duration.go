// Package duration holds the duration type of the registry adapters'
// options: a time.Duration that the config writes as a Go duration string.
package duration

import (
	"fmt"
	"time"
)

// Duration is a time.Duration written as a Go duration string ("30s",
// "1m30s") in the config.
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q: write a number with a unit, e.g. 30s or 2m", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d Duration) String() string { return time.Duration(d).String() }
