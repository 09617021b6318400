package consul

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/remora-mesh/remora/discovery"
)

// The Consul agent's rules for a service's Meta and Weights (its
// structs.ValidateServiceMetadata and ValidateWeights): a registration
// that breaks one is refused with a 400, at every attempt.
const (
	maxMetaPairs     = 64
	maxMetaKeyLength = 128
	maxMetaValue     = 512
	reservedMetaKey  = "consul-"
	maxWeight        = 65535
)

var metaKey = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// checkRegistration reports what of inst the agent would refuse: its
// metadata (which becomes the service's Meta, and its tags) and its
// weight (the service's passing weight). Errors name the field of the
// register: block.
func checkRegistration(inst discovery.Instance) error {
	var errs []error
	if len(inst.Metadata) > maxMetaPairs {
		errs = append(errs, fmt.Errorf("metadata: %d entries; Consul takes %d at most", len(inst.Metadata), maxMetaPairs))
	}
	keys := make([]string, 0, len(inst.Metadata))
	for k := range inst.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := inst.Metadata[k]
		switch {
		case !metaKey.MatchString(k):
			errs = append(errs, fmt.Errorf("metadata: key %q: Consul takes letters, digits, \"_\" and \"-\" in a Meta key", k))
		case len(k) > maxMetaKeyLength:
			errs = append(errs, fmt.Errorf("metadata: key %q is %d characters; Consul takes %d at most", k, len(k), maxMetaKeyLength))
		case strings.HasPrefix(k, reservedMetaKey):
			errs = append(errs, fmt.Errorf("metadata: key %q: the prefix %q is Consul's own", k, reservedMetaKey))
		}
		if len(v) > maxMetaValue {
			errs = append(errs, fmt.Errorf("metadata: the value of %q is %d characters; Consul takes %d at most", k, len(v), maxMetaValue))
		}
	}
	if inst.Weight > maxWeight {
		errs = append(errs, fmt.Errorf("weight: %d; Consul's weights are 1..%d", inst.Weight, maxWeight))
	}
	return errors.Join(errs...)
}

// ValidateRegistration implements discovery.RegistrationValidator.
func (o *Options) ValidateRegistration(_ string, inst discovery.Instance) error {
	return checkRegistration(inst)
}
