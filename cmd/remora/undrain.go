package main

// Undrain implements admin.Undrainer: readiness back on after POST /drain,
// for an operator who took the pod out of rotation and brings it back.
//
// It cannot yet tell a drain asked for on the admin API from the one a
// SIGTERM starts (serveUntil sets the same flag): an undrain during a
// shutdown's drain_delay turns /readyz back to 200 until the listeners
// close. The shutdown itself goes on regardless.
func (a *app) Undrain() error {
	if a.draining.Swap(false) {
		a.log.Info("undrain requested on the admin API: ready again")
	}
	return nil
}
