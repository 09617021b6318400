package etcd

import (
	"errors"
	"fmt"
	"strings"

	"github.com/remora-mesh/remora/discovery"
)

// checkService reports a service name that cannot be a segment of a key
// (<prefix>/<service>/<id>): empty, or holding a "/".
func checkService(service string) error {
	if service == "" || strings.Contains(service, "/") {
		return fmt.Errorf("%q: an etcd service name is one segment of its instances' keys (<prefix>/<service>/<id>): not empty, no \"/\"", service)
	}
	return nil
}

// checkID is checkService for an instance ID.
func checkID(id string) error {
	if id == "" || strings.Contains(id, "/") {
		return fmt.Errorf("%q: an etcd instance ID is the last segment of its key (<prefix>/<service>/<id>): not empty, no \"/\"", id)
	}
	return nil
}

// ValidateService implements discovery.ServiceValidator.
func (o *Options) ValidateService(service string) error { return checkService(service) }

// ValidateRegistration implements discovery.RegistrationValidator: the
// service and the instance ID are segments of the instance's key.
func (o *Options) ValidateRegistration(service string, inst discovery.Instance) error {
	var errs []error
	if err := checkService(service); err != nil {
		errs = append(errs, fmt.Errorf("service: %w", err))
	}
	if err := checkID(inst.ID); err != nil {
		errs = append(errs, fmt.Errorf("id: %w", err))
	}
	return errors.Join(errs...)
}
