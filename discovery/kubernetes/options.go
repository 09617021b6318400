package kubernetes

import (
	"errors"
	"fmt"
	"strings"
)

// Address types an EndpointSlice may have that the adapter reads.
const (
	AddressTypeIPv4 = "IPv4"
	AddressTypeIPv6 = "IPv6"
)

// Options are the settings of a Kubernetes registry, the block under the
// `kubernetes:` key of a registry with `type: kubernetes` (every field
// optional):
//
//	registries:
//	  - name: k8s
//	    type: kubernetes
//	    kubernetes:
//	      kubeconfig: ~/.kube/config  # default: in-cluster (the pod's service account)
//	      context: dev                # a kubeconfig context; default: its current context
//	      namespace: shop             # for services named without one
//	      port: http                  # for services named without :PORT (a port name or number)
//	      pods: false                 # true: pod labels become metadata (needs pods RBAC)
//	      address_type: IPv4          # IPv4 or IPv6; default: both (IPv4 first)
//
// An upstream's `service:` names a Service as [NAMESPACE/]NAME[:PORT] (see
// ParseService). The namespace defaults to `namespace:`, else the pod's own
// (in-cluster) or the kubeconfig context's, else "default". The port
// defaults to `port:`; without either, a Service with one port is followed
// on that port and a Service with several is an error naming them.
//
// Relative file names are resolved against the config file's directory and
// a leading ~/ against $HOME. An Options value is immutable once Parse has
// returned it.
type Options struct {
	// Kubeconfig is a kubeconfig file for running outside a cluster; empty
	// means in-cluster configuration (the service account token and CA
	// that the kubelet mounts, $KUBERNETES_SERVICE_HOST and _PORT).
	Kubeconfig string `yaml:"kubeconfig"`
	// Context is the kubeconfig context to use; empty means the file's
	// current context. Only with Kubeconfig.
	Context string `yaml:"context"`
	// Namespace is the namespace of services named without one.
	Namespace string `yaml:"namespace"`
	// Port is the Service port (a port name or a number) of services named
	// without one.
	Port string `yaml:"port"`
	// Pods turns on a pods informer per namespace: the labels of each
	// endpoint's target pod are added to its metadata (canary, version,
	// ...), and the pod annotation remora.io/weight sets its weight.
	// Needs get, list and watch on pods.
	Pods bool `yaml:"pods"`
	// AddressType limits endpoints to EndpointSlices of one address type,
	// IPv4 or IPv6. Empty reads both, and a pod in both (dual stack) is
	// reached at its IPv4 address.
	AddressType string `yaml:"address_type"`
}

// String describes the options.
func (o Options) String() string {
	var b strings.Builder
	b.WriteString("kubernetes{")
	if o.Kubeconfig == "" {
		b.WriteString("in-cluster")
	} else {
		fmt.Fprintf(&b, "kubeconfig=%s", o.Kubeconfig)
		if o.Context != "" {
			fmt.Fprintf(&b, " context=%s", o.Context)
		}
	}
	for _, kv := range [][2]string{{"namespace", o.Namespace}, {"port", o.Port}, {"address_type", o.AddressType}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
		}
	}
	fmt.Fprintf(&b, " pods=%v}", o.Pods)
	return b.String()
}

// GoString covers %#v, which would otherwise print the struct's fields.
func (o Options) GoString() string { return o.String() }

// normalize validates; each error names the field at fault, and they are
// joined (errors.Join) so that the config loader reports each with its
// path and line.
func (o *Options) normalize() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if o.Context != "" && o.Kubeconfig == "" {
		bad("context: %q needs kubeconfig: (in-cluster configuration has no contexts)", o.Context)
	}
	if o.Namespace != "" {
		if err := checkLabel(o.Namespace); err != nil {
			bad("namespace: %q %v", o.Namespace, err)
		}
	}
	if o.Port != "" {
		if _, _, err := parsePort(o.Port); err != nil {
			bad("port: %v", err)
		}
	}
	switch strings.ToLower(o.AddressType) {
	case "":
	case "ipv4":
		o.AddressType = AddressTypeIPv4
	case "ipv6":
		o.AddressType = AddressTypeIPv6
	default:
		bad("address_type: %q is not supported; want IPv4 or IPv6 (or leave it out for both)", o.AddressType)
	}
	return errors.Join(errs...)
}

// ValidateService implements discovery.ServiceValidator: whether service
// is a valid service name for this registry ([NAMESPACE/]NAME[:PORT]),
// naming what is wrong.
func (o *Options) ValidateService(service string) error {
	_, err := ParseService(service)
	return err
}
