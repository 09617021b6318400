package nacos

import (
	"errors"
	"fmt"

	"github.com/remora-mesh/remora/discovery"
)

// ValidateService implements discovery.ServiceValidator: a plain name or
// one of Nacos' key forms (parseServiceKey).
func (o *Options) ValidateService(service string) error {
	_, err := parseServiceKey(service, o.Group, o.Clusters)
	return err
}

// ValidateRegistration implements discovery.RegistrationValidator: the
// service is a name or key form that names one cluster at most, and the
// weight, divided by weight_scale, is within Nacos' range.
func (o *Options) ValidateRegistration(service string, inst discovery.Instance) error {
	var errs []error
	if _, err := registrationKey(service, o.Group); err != nil {
		errs = append(errs, fmt.Errorf("service: %w", err))
	}
	if err := checkWeight(inst.Weight, o.WeightScale); err != nil {
		errs = append(errs, fmt.Errorf("weight: %w", err))
	}
	return errors.Join(errs...)
}

// registrationKey is the key an instance of service registers under: a
// name or key form (parseServiceKey) that names one cluster at most.
func registrationKey(service, group string) (serviceKey, error) {
	key, err := parseServiceKey(service, group, nil)
	if err != nil {
		return key, err
	}
	if len(key.Clusters) > 1 {
		return key, fmt.Errorf("service %q names %d clusters; an instance is in one cluster: name one", service, len(key.Clusters))
	}
	return key, nil
}

// checkWeight reports a weight that, divided by scale, is above Nacos'
// maximum.
func checkWeight(weight uint32, scale int) error {
	if w := float64(weight) / float64(scale); w > maxNacosWeight {
		return fmt.Errorf("%d / weight_scale %d = %g is above Nacos' maximum %d", weight, scale, w, maxNacosWeight)
	}
	return nil
}
