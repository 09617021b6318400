package kubernetes

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Service names one port of a Kubernetes Service: what an upstream's
// `service:` says, [NAMESPACE/]NAME[:PORT]. It is a value.
type Service struct {
	// Namespace is the Service's namespace; empty means the registry's
	// default namespace.
	Namespace string
	// Name is the Service's name.
	Name string
	// Port is the Service port's name, or its number in decimal; empty
	// means the registry's default port (or the Service's only port).
	Port string
}

// String returns the service in the form ParseService reads.
func (s Service) String() string {
	out := s.Name
	if s.Namespace != "" {
		out = s.Namespace + "/" + out
	}
	if s.Port != "" {
		out += ":" + s.Port
	}
	return out
}

// ParseService reads [NAMESPACE/]NAME[:PORT]: a namespace (a DNS label), a
// Service name (a DNS label that starts with a letter, as Kubernetes wants
// of Service names), and a port, either its name (a DNS label, not all
// digits) or its number (1..65535), as the Service's ports list them:
//
//	user-service
//	shop/user-service
//	shop/user-service:http
//	user-service:8080
//
// The error names the part at fault.
func ParseService(s string) (Service, error) {
	if s == "" {
		return Service{}, errors.New("the service is empty; want [NAMESPACE/]NAME[:PORT], e.g. shop/user-service:http")
	}
	rest := s
	var svc Service
	if ns, r, ok := strings.Cut(rest, "/"); ok {
		if err := checkLabel(ns); err != nil {
			return Service{}, fmt.Errorf("service %q: namespace %q %v", s, ns, err)
		}
		svc.Namespace, rest = ns, r
	}
	if name, port, ok := strings.Cut(rest, ":"); ok {
		if _, _, err := parsePort(port); err != nil {
			return Service{}, fmt.Errorf("service %q: %v", s, err)
		}
		svc.Port, rest = port, name
	}
	if err := checkLabel(rest); err != nil {
		return Service{}, fmt.Errorf("service %q: name %q %v; want [NAMESPACE/]NAME[:PORT]", s, rest, err)
	}
	if c := rest[0]; c < 'a' || c > 'z' {
		return Service{}, fmt.Errorf("service %q: name %q must start with a lower-case letter (a Service name is a DNS-1035 label)", s, rest)
	}
	svc.Name = rest
	return svc, nil
}

// parsePort reads a port: its number (1..65535, no sign or leading zero)
// or its name (a DNS label that is not all digits). It returns the number
// (0 for a name) and the name ("" for a number).
func parsePort(p string) (num int32, name string, err error) {
	if p == "" {
		return 0, "", errors.New("port is empty; want a port name (e.g. http) or number (1..65535)")
	}
	if allDigits(p) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || p[0] == '0' {
			return 0, "", fmt.Errorf("port %q is not a port number (1..65535, no leading zero) or name", p)
		}
		return int32(n), "", nil
	}
	if err := checkLabel(p); err != nil {
		return 0, "", fmt.Errorf("port name %q %v", p, err)
	}
	return 0, p, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// checkLabel checks a DNS-1123 label: 1..63 characters of a-z, 0-9 and
// '-', starting and ending with a letter or digit. The error completes a
// sentence that starts with the quoted label.
func checkLabel(s string) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case len(s) > 63:
		return fmt.Errorf("is %d characters long; at most 63", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		case c == '-':
			return errors.New("must start and end with a lower-case letter or digit")
		default:
			return fmt.Errorf("has %q; only lower-case letters, digits and '-' are allowed (a DNS label)", c)
		}
	}
	return nil
}
