package admin

import (
	"net/http"
	"time"

	"github.com/remora-mesh/remora/pkg/register"
)

// RegistrationSource is an optional capability of a Source, found by type
// assertion: the registration of the local application (register:), for
// GET /register and the remora_registration_* metrics. Registration is
// called concurrently from request goroutines; it must not block on the
// network or wait for a reload.
type RegistrationSource interface {
	// Registration returns the registration's state, and false when
	// nothing is to be registered (no register: block).
	Registration() (Registration, bool)
}

// Registration is the state a RegistrationSource reports.
type Registration struct {
	// Registry is the name of the registry registered in.
	Registry string
	// Status is the agent's (register.Agent.Status).
	Status register.Status
	// Reregistrations counts the times the registry was found to have
	// lost the registration and it was written again, over every
	// registration made since the process started: it only grows.
	Reregistrations uint64
}

// up reports whether the registry holds the registration: the application
// is registered and the registry accepted it (as far as its adapter
// reports; a registration whose adapter does not report counts as held
// while it is registered).
func (r Registration) up() bool {
	st := r.Status
	return st.Registered && (st.Registration == nil || st.Registration.Up)
}

// RegisterStatus is the JSON form of the registration (GET /register).
type RegisterStatus struct {
	Registry string `json:"registry"`
	Service  string `json:"service"`
	ID       string `json:"id"`
	Address  string `json:"address"`
	Port     int    `json:"port"`
	// AppHealthy is the verdict of the last health check of the local
	// application; LastCheckError the reason of its last failure.
	AppHealthy     bool   `json:"app_healthy"`
	LastCheckError string `json:"last_check_error,omitempty"`
	// Registered: the application is meant to be registered (it passed
	// its checks and was not withdrawn since); Weight is what is
	// advertised (lower during warm-up, 0 when not registered).
	Registered bool   `json:"registered"`
	Weight     uint32 `json:"weight"`
	// Withdrawn: a drain (POST /drain) took the application out of the
	// registry; POST /undrain lets it back in.
	Withdrawn bool `json:"withdrawn"`
	// Up: the registry holds the registration (see Registration). It is
	// what remora_registration_up reports.
	Up bool `json:"up"`
	// RegistrySide is the registry's side as its adapter reports it, while
	// registered, for
	// adapters that report (etcd, Consul); absent otherwise.
	RegistrySide *RegistrySide `json:"registry_side,omitempty"`
	// Reregistrations since the process started.
	Reregistrations uint64 `json:"reregistrations"`
}

// RegistrySide is the registry side of a registration as its adapter's
// reconciler last saw it.
type RegistrySide struct {
	// Up: the registry held the registration when it last answered.
	Up bool `json:"up"`
	// Since is when Up last changed.
	Since time.Time `json:"since"`
	// LastError is the most recent failure, kept after a recovery.
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// RegisterView renders a registration for GET /register.
func RegisterView(r Registration) RegisterStatus {
	st := r.Status
	out := RegisterStatus{
		Registry: r.Registry, Service: st.Service, ID: st.ID, Address: st.Address, Port: st.Port,
		AppHealthy: st.Healthy, LastCheckError: st.LastCheckError, Registered: st.Registered, Weight: st.Weight,
		Withdrawn: st.Withdrawn, Up: r.up(), Reregistrations: r.Reregistrations,
	}
	if rs := st.Registration; rs != nil && st.Registered {
		side := &RegistrySide{Up: rs.Up, Since: rs.Since, LastError: rs.LastError}
		if rs.LastError != "" {
			at := rs.LastErrorAt
			side.LastErrorAt = &at
		}
		out.RegistrySide = side
	}
	return out
}

// serveRegister answers GET /register.
func serveRegister(src Source, w http.ResponseWriter) {
	rs, ok := src.(RegistrationSource)
	var r Registration
	if ok {
		r, ok = rs.Registration()
	}
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "nothing is registered: the configuration has no register: block"})
		return
	}
	writeJSON(w, http.StatusOK, RegisterView(r))
}
