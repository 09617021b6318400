package discovery

import (
	"sync"
	"time"
)

// RegistrationStatus is the state of one Registration as the adapter's
// reconciler last saw it, for the admin API and metrics.
type RegistrationStatus struct {
	// Up reports that the registry held the wanted registration when the
	// registry last answered a write or a check of it. It is false before
	// the first write, after a failed write or check (the registry is
	// unreachable, or refuses) and after the registration was found lost,
	// until a write or check succeeds again.
	Up bool
	// Since is when Up last changed (at first, when Register was called).
	Since time.Time
	// LastError describes the most recent failure, "" if there was none.
	// It is kept after a recovery; LastErrorAt says when it happened.
	LastError   string
	LastErrorAt time.Time
	// Reregistrations counts the times the registration was found lost (an
	// expired lease, a restarted agent that forgot it, a deleted key) and
	// written again. Register's first write and Update are not counted.
	Reregistrations uint64
}

// StatusReporter is an optional capability of a Registration, found by type
// assertion: it reports the registration's status. Status is safe to call
// from any goroutine, concurrently with the Registration's methods, and
// does not block on the network.
type StatusReporter interface {
	Status() RegistrationStatus
}

// StatusRecorder keeps the RegistrationStatus of one registration for its
// adapter: the reconciler records what happens, Status reads it. Its
// methods are safe for concurrent use and never block on anything but its
// own mutex.
type StatusRecorder struct {
	mu sync.Mutex
	st RegistrationStatus
}

// NewStatusRecorder returns a recorder of a registration that is not up
// yet, Since now.
func NewStatusRecorder() *StatusRecorder {
	return &StatusRecorder{st: RegistrationStatus{Since: time.Now()}}
}

// Up records that the registry holds the registration; reregistered also
// counts a re-registration. It reports whether Up changed.
func (r *StatusRecorder) Up(reregistered bool) (changed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if reregistered {
		r.st.Reregistrations++
	}
	if r.st.Up {
		return false
	}
	r.st.Up, r.st.Since = true, time.Now()
	return true
}

// Down records that the registration is not (known to be) held, because of
// err (nil: no new error). It reports whether Up changed.
func (r *StatusRecorder) Down(err error) (changed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.st.LastError, r.st.LastErrorAt = err.Error(), time.Now()
	}
	if !r.st.Up {
		return false
	}
	r.st.Up, r.st.Since = false, time.Now()
	return true
}

// Status returns a copy of the status.
func (r *StatusRecorder) Status() RegistrationStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}
