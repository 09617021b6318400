package nacostest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/remora-mesh/remora/discovery"
)

// RegisterHTTP creates or replaces instance in of service through the
// Nacos v1 HTTP API (POST /nacos/v1/ns/instance) as a persistent instance,
// bound to no client connection, with in's address, port, weight,
// metadata and healthy flag (and the options' cluster, group, weight and
// enabled). Use it for states a gRPC registration does not keep reliably:
// Polaris may report an instance registered unhealthy over gRPC as healthy
// once the SDK registers it again on connecting. (Polaris gives such an
// instance a heartbeat check, but without a first heartbeat it keeps the
// registered health: observed for 25 s.) Deregister removes it.
func (s *Server) RegisterHTTP(t testing.TB, service string, in discovery.Instance, opts ...Option) {
	t.Helper()
	p := vo.RegisterInstanceParam{
		Ip: in.Address, Port: uint64(in.Port), Weight: float64(in.Weight), Enable: true, Healthy: in.Healthy,
		Metadata: in.Metadata, ServiceName: service, GroupName: DefaultGroup,
	}
	for _, o := range opts {
		o(&p)
	}
	form := url.Values{
		"serviceName": {service}, "groupName": {p.GroupName}, "ip": {p.Ip}, "port": {strconv.FormatUint(p.Port, 10)},
		"weight": {strconv.FormatFloat(p.Weight, 'f', -1, 64)}, "healthy": {strconv.FormatBool(p.Healthy)},
		"enabled": {strconv.FormatBool(p.Enable)}, "ephemeral": {"false"},
	}
	if p.ClusterName != "" {
		form.Set("clusterName", p.ClusterName)
	}
	// Always metadata: Polaris v1.18.1 refuses a registration without it
	// ("metadata format incorrect"); Nacos does not.
	meta := p.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	b, _ := json.Marshal(meta)
	form.Set("metadata", string(b))
	if err := s.nacosHTTP(http.MethodPost, form); err != nil {
		t.Fatalf("nacostest: registering %s/%s over HTTP: %v", service, in.ID, err)
	}
	s.mu.Lock()
	s.httpInstances[service+"\x00"+in.ID] = p
	s.mu.Unlock()
}

// deregisterHTTP removes an instance registered by RegisterHTTP; ok is
// false if there is none with that ID.
func (s *Server) deregisterHTTP(service, id string) (ok bool, err error) {
	key := service + "\x00" + id
	s.mu.Lock()
	p, ok := s.httpInstances[key]
	delete(s.httpInstances, key)
	s.mu.Unlock()
	if !ok {
		return false, nil
	}
	form := url.Values{
		"serviceName": {service}, "groupName": {p.GroupName}, "ip": {p.Ip},
		"port": {strconv.FormatUint(p.Port, 10)}, "ephemeral": {"false"},
	}
	if p.ClusterName != "" {
		form.Set("clusterName", p.ClusterName)
	}
	return true, s.nacosHTTP(http.MethodDelete, form)
}

// nacosHTTP sends form to /nacos/v1/ns/instance and wants "ok" back.
func (s *Server) nacosHTTP(method string, form url.Values) error {
	u := "http://" + s.Addr() + "/nacos/v1/ns/instance"
	var body io.Reader
	if method == http.MethodDelete {
		u += "?" + form.Encode()
	} else {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "ok" {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, u, resp.StatusCode, b)
	}
	return nil
}

// Host is one instance of a service as the server's v1 HTTP API lists it.
type Host struct {
	IP          string            `json:"ip"`
	Port        int               `json:"port"`
	Weight      float64           `json:"weight"`
	Healthy     bool              `json:"healthy"`
	Enabled     bool              `json:"enabled"`
	Ephemeral   bool              `json:"ephemeral"`
	ClusterName string            `json:"clusterName"`
	Metadata    map[string]string `json:"metadata"`
}

// Instances lists the instances of service in DEFAULT_GROUP, healthy or
// not, by asking the server (GET /nacos/v1/ns/instance/list): what it holds
// now, not what a subscriber was last pushed. It fails t if the server does
// not answer.
func (s *Server) Instances(t testing.TB, service string) []Host {
	t.Helper()
	hosts, err := s.instances(service)
	if err != nil {
		t.Fatalf("nacostest: listing the instances of %s: %v", service, err)
	}
	return hosts
}

func (s *Server) instances(service string) ([]Host, error) {
	q := url.Values{"serviceName": {service}, "groupName": {DefaultGroup}, "healthyOnly": {"false"}}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + s.Addr() + "/nacos/v1/ns/instance/list?" + q.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	var body struct {
		Hosts []Host `json:"hosts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	return body.Hosts, nil
}
