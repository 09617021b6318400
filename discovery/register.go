package discovery

import "context"

// Registrar is implemented by registries that can announce an instance: the
// local application Remora runs beside. It is an optional capability, found
// by type assertion on a Registry.
type Registrar interface {
	// Register announces inst under service and keeps it alive (a lease,
	// a TTL check, an ephemeral instance) until Deregister or Close.
	Register(ctx context.Context, service string, inst Instance) (Registration, error)
}

// Registration is one announced instance. Its methods are called by one
// goroutine.
type Registration interface {
	// Update replaces the announced instance (same ID): a new weight or
	// labels.
	Update(ctx context.Context, inst Instance) error
	// Deregister withdraws the instance and stops keeping it alive.
	Deregister(ctx context.Context) error
}
