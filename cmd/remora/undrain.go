package main

import "errors"

// Undrain implements admin.Undrainer: readiness and the registration back
// on after POST /drain, for an operator who took the pod out of rotation
// and brings it back. It fails once the process is stopping (markStopping:
// a signal, or shutdown): no undrain turns a shutdown's /readyz back on.
func (a *app) Undrain() error {
	a.drainMu.Lock()
	defer a.drainMu.Unlock()
	if a.stopping {
		return errors.New("remora is shutting down")
	}
	if a.draining.Swap(false) {
		if la := a.agent.Load(); la != nil {
			la.SetWithdrawn(false)
		}
		a.log.Info("undrain requested on the admin API: ready again")
	}
	return nil
}

// markStopping marks the process as stopping: not ready, for good.
func (a *app) markStopping() {
	a.drainMu.Lock()
	defer a.drainMu.Unlock()
	if !a.stopping && a.stopped != nil {
		close(a.stopped)
	}
	a.stopping = true
	a.draining.Store(true)
}
