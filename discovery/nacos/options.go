package nacos

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/remora-mesh/remora/internal/duration"
	"github.com/remora-mesh/remora/internal/secret"
	"github.com/remora-mesh/remora/internal/tlsfiles"
)

// Defaults applied by Parse.
const (
	DefaultServer         = "127.0.0.1:8848"
	DefaultPort           = 8848
	DefaultGroup          = "DEFAULT_GROUP"
	DefaultCluster        = "DEFAULT"
	DefaultContextPath    = "/nacos"
	DefaultGRPCPortOffset = 1000
	DefaultTimeout        = 10 * time.Second
	DefaultWeightScale    = 1

	minTimeout     = 100 * time.Millisecond
	maxTimeout     = 2 * time.Minute
	maxWeightScale = 1000
)

// Options are the settings of a Nacos registry, the block under the
// `nacos:` key of a registry with `type: nacos` (every field optional):
//
//	registries:
//	  - name: nacos
//	    type: nacos
//	    nacos:
//	      servers: [10.0.0.1:8848, 10.0.0.2:8848]  # host[:port], may start with http:// and end with a context path
//	      grpc_port_offset: 1000        # gRPC port = HTTP port + offset (Nacos 2.x)
//	      namespace: ""                 # namespace ID; "" is Nacos' "public"
//	      group: DEFAULT_GROUP
//	      clusters: [hz-a, hz-b]        # only instances of these clusters; empty: all
//	      username: remora              # with password or password_file
//	      password_file: nacos.pass
//	      access_key: LTAI...           # or access_key with secret_key / secret_key_file
//	      timeout: 10s                  # one request to the server
//	      cache_dir: cache/nacos        # default: <data_dir>/nacos/<registry name>
//	      weight_scale: 1               # Instance weight = round(Nacos weight × scale)
//
// Relative file names are resolved against the config file's directory. An
// Options value is immutable once Parse has returned it. Password and
// SecretKey are Secrets and are never printed.
type Options struct {
	// Servers lists the Nacos servers (HTTP address; the SDK talks gRPC on
	// port + GRPCPortOffset).
	Servers []string `yaml:"servers"`
	// GRPCPortOffset is added to each server's HTTP port to get its gRPC
	// port; Nacos 2.x (and Polaris) use 1000.
	GRPCPortOffset int `yaml:"grpc_port_offset"`
	// Namespace is the namespace ID; "" means Nacos' default ("public").
	Namespace string `yaml:"namespace"`
	// Group is the default group of watched services.
	Group string `yaml:"group"`
	// Clusters, when set, limit every watch to instances of these clusters
	// (an instance without a cluster is in "DEFAULT").
	Clusters []string `yaml:"clusters"`
	// Username and Password (or PasswordFile) log in to a Nacos server with
	// auth enabled.
	Username     string `yaml:"username"`
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// AccessKey and SecretKey (or SecretKeyFile) sign requests (Alibaba
	// Cloud MSE / RAM auth).
	AccessKey     string `yaml:"access_key"`
	SecretKey     Secret `yaml:"secret_key"`
	SecretKeyFile string `yaml:"secret_key_file"`
	// Timeout bounds one request to the server.
	Timeout Duration `yaml:"timeout"`
	// CacheDir is where the SDK keeps its on-disk copy of the instance
	// lists, used when Remora starts while the server is down. Default:
	// <data_dir>/nacos/<registry name>; without either, there is no disk
	// cache. A path under a file is refused with the config; one that
	// cannot be created when the registry opens is logged and replaced by
	// a temporary directory.
	CacheDir string `yaml:"cache_dir"`
	// WeightScale multiplies Nacos' float weights before rounding them to
	// Remora's integer weights (see the package doc).
	WeightScale int `yaml:"weight_scale"`

	servers []server // parsed Servers
	// tune, if set, adjusts the registry before it starts: tests shorten
	// its intervals with it. Never set from YAML.
	tune func(*registry)
}

// server is one parsed entry of Servers.
type server struct {
	Scheme      string
	Host        string
	Port        int
	ContextPath string
}

func (s server) String() string {
	return s.Scheme + "://" + net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) + s.ContextPath
}

// parseServer parses one entry of servers: host, host:port, [v6]:port,
// optionally with an http:// scheme and a context path (default /nacos; a
// bare "/" is the root). It is a parser of user input, fuzzed by
// FuzzParseServer.
func parseServer(s string) (server, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return server{}, errors.New("empty; write host:port, for example " + DefaultServer)
	}
	if _, creds := secret.Userinfo(in); creds {
		return server{}, secret.UserinfoError(in, "username: with password: or password_file:")
	}
	srv := server{Scheme: "http", ContextPath: DefaultContextPath}
	if scheme, rest, ok := strings.Cut(in, "://"); ok {
		switch strings.ToLower(scheme) {
		case "http":
		case "https":
			return server{}, fmt.Errorf("%q: https is not supported: the adapter speaks plain gRPC (port + grpc_port_offset) and HTTP; write http://", s)
		default:
			return server{}, fmt.Errorf("%q: scheme %q is not supported; write host:port or http://host:port", s, scheme)
		}
		in = rest
	}
	hostport, path, hasPath := strings.Cut(in, "/")
	if hasPath {
		// A path, even "/", is the context path ("/" is the root: Polaris
		// serves the login API there, not under /nacos).
		if strings.ContainsAny(path, "?#% \t") || strings.Contains("/"+path, "//") && path != "" {
			return server{}, fmt.Errorf("%q: context path %q is not a plain path like /nacos", s, "/"+path)
		}
		srv.ContextPath = strings.TrimSuffix("/"+path, "/")
	}
	if hostport == "" {
		return server{}, fmt.Errorf("%q: no host; write host:port, for example %s", s, DefaultServer)
	}
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port (or a bare IPv6 literal): the default port.
		host, portStr = hostport, strconv.Itoa(DefaultPort)
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		}
		if strings.ContainsAny(host, "[]") || (strings.Contains(host, ":") && net.ParseIP(host) == nil) {
			return server{}, fmt.Errorf("%q is not host:port (for example %s)", s, DefaultServer)
		}
	}
	if host == "" || strings.ContainsAny(host, " \t@/?#%[]") {
		return server{}, fmt.Errorf("%q: %q is not a host name or IP address", s, host)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return server{}, fmt.Errorf("%q: port %q; want 1..65535", s, portStr)
	}
	srv.Host, srv.Port = host, port
	return srv, nil
}

// Secret is a string that formats as "[redacted]" (when non-empty) in every
// fmt verb and in text/JSON/YAML encodings, so a password cannot leak into
// logs or a config dump. Use string(s) to read it.
type Secret = secret.Secret

const redacted = secret.Redacted

// Duration is a time.Duration written as a Go duration string ("30s",
// "1m30s") in the config.
type Duration = duration.Duration

// String describes the options without secrets.
func (o Options) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nacos{servers=%s grpc_port_offset=%d namespace=%q group=%s",
		strings.Join(o.Servers, ","), o.GRPCPortOffset, o.Namespace, o.Group)
	if len(o.Clusters) > 0 {
		b.WriteString(" clusters=" + strings.Join(o.Clusters, ","))
	}
	for _, kv := range [][2]string{
		{"username", o.Username}, {"password", o.Password.String()}, {"password_file", o.PasswordFile},
		{"access_key", o.AccessKey}, {"secret_key", o.SecretKey.String()}, {"secret_key_file", o.SecretKeyFile},
		{"cache_dir", o.CacheDir},
	} {
		if kv[1] != "" {
			fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
		}
	}
	fmt.Fprintf(&b, " timeout=%s weight_scale=%d}", o.Timeout, o.WeightScale)
	return b.String()
}

// GoString covers %#v, which would otherwise print the struct's fields.
func (o Options) GoString() string { return o.String() }

// normalize applies defaults and validates; each error starts with the
// field at fault ("servers[0]: ..."), and they are joined (errors.Join) so
// that the config loader places each at its line.
func (o *Options) normalize() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(o.Servers) == 0 {
		o.Servers = []string{DefaultServer}
	}
	o.servers = o.servers[:0]
	seen := map[string]bool{}
	for i, s := range o.Servers {
		srv, err := parseServer(s)
		if err != nil {
			bad("servers[%d]: %v", i, err)
			continue
		}
		if seen[srv.String()] {
			bad("servers[%d]: %q is listed twice", i, s)
			continue
		}
		seen[srv.String()] = true
		o.servers = append(o.servers, srv)
	}

	switch {
	case o.GRPCPortOffset == 0:
		o.GRPCPortOffset = DefaultGRPCPortOffset
	case o.GRPCPortOffset < 1 || o.GRPCPortOffset > 65534:
		bad("grpc_port_offset: %d is out of range; want 1..65534 (Nacos uses 1000)", o.GRPCPortOffset)
	}
	for i, srv := range o.servers {
		if p := srv.Port + o.GRPCPortOffset; p > 65535 && o.GRPCPortOffset > 0 {
			bad("servers[%d]: gRPC port %d (port %d + grpc_port_offset %d) is above 65535", i, p, srv.Port, o.GRPCPortOffset)
		}
	}

	if err := checkName(o.Namespace); err != nil {
		bad("namespace: %q %v", o.Namespace, err)
	}
	o.Group = strings.TrimSpace(o.Group)
	if o.Group == "" {
		o.Group = DefaultGroup
	} else if err := checkName(o.Group); err != nil {
		bad("group: %q %v", o.Group, err)
	}
	clusters := make([]string, 0, len(o.Clusters))
	for i, c := range o.Clusters {
		switch err := checkName(c); {
		case strings.TrimSpace(c) == "":
			bad("clusters[%d]: empty; name a cluster (an instance without one is in %q)", i, DefaultCluster)
		case err != nil:
			bad("clusters[%d]: %q %v", i, c, err)
		case strings.Contains(c, ","):
			bad("clusters[%d]: %q contains a comma; list clusters as separate entries", i, c)
		case slices.Contains(clusters, c):
			bad("clusters[%d]: %q is listed twice", i, c)
		default:
			clusters = append(clusters, c)
		}
	}
	o.Clusters = clusters

	if o.Password != "" && o.PasswordFile != "" {
		bad("password_file: set, and so is password; set only one")
	}
	hasPassword := o.Password != "" || o.PasswordFile != ""
	if o.Username == "" && hasPassword {
		bad("username: missing; password is set, so set the user name it belongs to")
	}
	if o.Username != "" && !hasPassword {
		bad("password: missing; username %q is set, so set password or password_file", o.Username)
	}
	if o.SecretKey != "" && o.SecretKeyFile != "" {
		bad("secret_key_file: set, and so is secret_key; set only one")
	}
	hasSecretKey := o.SecretKey != "" || o.SecretKeyFile != ""
	if o.AccessKey == "" && hasSecretKey {
		bad("access_key: missing; secret_key is set, so set the access key it belongs to")
	}
	if o.AccessKey != "" && !hasSecretKey {
		bad("secret_key: missing; access_key is set, so set secret_key or secret_key_file")
	}
	for _, kv := range [][2]string{{"username", o.Username}, {"password", string(o.Password)},
		{"access_key", o.AccessKey}, {"secret_key", string(o.SecretKey)}} {
		if strings.TrimSpace(kv[1]) != kv[1] {
			bad("%s: has leading or trailing white space", kv[0])
		}
	}

	switch t := time.Duration(o.Timeout); {
	case t == 0:
		o.Timeout = Duration(DefaultTimeout)
	case t < minTimeout || t > maxTimeout:
		bad("timeout: %s is out of range; want %s..%s", t, minTimeout, maxTimeout)
	}
	switch {
	case o.WeightScale == 0:
		o.WeightScale = DefaultWeightScale
	case o.WeightScale < 1 || o.WeightScale > maxWeightScale:
		bad("weight_scale: %d is out of range; want 1..%d", o.WeightScale, maxWeightScale)
	}
	return errors.Join(errs...)
}

// checkName rejects names that cannot be a Nacos namespace, group or
// cluster: "@@" is Nacos' separator in service keys, and white space or
// control characters are always a typo.
func checkName(s string) error {
	switch {
	case strings.Contains(s, "@@"):
		return errors.New(`contains "@@", Nacos' group separator`)
	case strings.TrimSpace(s) != s:
		return errors.New("has leading or trailing white space")
	case strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errors.New("contains a control character")
	}
	return nil
}

// credentials resolves the password and secret key, reading the files (the
// content is trimmed; an empty file is an error). Both files are tried; the
// errors, each naming its field, are joined.
func (o *Options) credentials(baseDir string) (password, secretKey string, err error) {
	read := func(field, path string) (string, error) {
		return secret.ReadFile(field, tlsfiles.Resolve(baseDir, path), "the secret")
	}
	password, secretKey = string(o.Password), string(o.SecretKey)
	var perr, serr error
	if o.PasswordFile != "" {
		password, perr = read("password_file", o.PasswordFile)
	}
	if o.SecretKeyFile != "" {
		secretKey, serr = read("secret_key_file", o.SecretKeyFile)
	}
	if err := errors.Join(perr, serr); err != nil {
		return "", "", err
	}
	return password, secretKey, nil
}
