package dns

import (
	"fmt"
	"net"
	"strings"

	"github.com/remora-mesh/remora/internal/regularfile"
)

// resolvConfig is how names are resolved: the DNS servers to ask, in
// order, and the names a name is asked as (see names). Its zero search
// list and ndots ask every name as written, made absolute: that is the
// configuration with an explicit resolver. A resolvConfig is not changed
// once made, so it may be shared between goroutines.
type resolvConfig struct {
	servers []string // host:port
	search  []string // domains with their final dot, in order
	ndots   int      // a name with at least this many dots is asked as written first
}

// maxNameservers is how many nameservers of resolv.conf are asked, as
// glibc's MAXNS.
const maxNameservers = 3

// maxNdots is the largest ndots option taken, as glibc's RES_MAXNDOTS
// (Go's resolver caps it there too).
const maxNdots = 15

// readResolvConf reads a resolv.conf file (see parseResolvConf); one that
// names no nameserver is an error, and so is one that is not a regular
// file (a named pipe would block the reader, and every watcher waiting on
// it, for good) or is over regularfile.MaxSize bytes: they are handled as
// a missing file is.
func readResolvConf(path, port string) (resolvConfig, error) {
	data, err := regularfile.ReadFileMax(path, regularfile.MaxSize)
	if err != nil {
		return resolvConfig{}, err
	}
	conf := parseResolvConf(data, port)
	if len(conf.servers) == 0 {
		return resolvConfig{}, fmt.Errorf("%s names no nameserver", path)
	}
	return conf, nil
}

// parseResolvConf reads resolv.conf's form as Go's resolver does
// (net/dnsconfig_unix.go): its first maxNameservers nameservers, each with
// port; the search list of its last "search" or "domain" line (a domain
// line is a list of one); and "options ndots:N", default 1, clamped to
// 0..maxNdots. Lines that start with '#' or ';' are comments; other
// options and lines are ignored. Unlike Go and glibc, a file without a
// search or domain line has no search list: the host name's domain is not
// taken.
func parseResolvConf(data []byte, port string) resolvConfig {
	conf := resolvConfig{ndots: 1}
	for line := range strings.Lines(string(data)) {
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(conf.servers) < maxNameservers {
				conf.servers = append(conf.servers, net.JoinHostPort(f[1], port))
			}
		case "domain":
			conf.search = searchList(f[1:2])
		case "search":
			conf.search = searchList(f[1:])
		case "options":
			for _, opt := range f[1:] {
				if n, ok := strings.CutPrefix(opt, "ndots:"); ok {
					conf.ndots = leadingNumber(n, maxNdots)
				}
			}
		}
	}
	return conf
}

// searchList is domains with their final dots; the root (".") is left
// out, as Go's resolver does.
func searchList(domains []string) []string {
	out := make([]string, 0, len(domains))
	for _, d := range domains {
		if d = dnsName(d); d != "." {
			out = append(out, d)
		}
	}
	return out
}

// leadingNumber is the number that s's leading digits spell, at most
// limit; 0 without any (as Go's resolver reads "ndots:").
func leadingNumber(s string, limit int) int {
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			break
		}
		n = min(n*10+int(c-'0'), limit)
	}
	return n
}

// maxNameLength is the longest name asked, with its final dot (RFC 1035's
// 255 octets on the wire).
const maxNameLength = 254

// names are the names that name is asked as, in order, as Go's resolver
// has them (net/dnsconfig_unix.go, nameList): a name with a final dot is
// absolute and asked as written only; one with at least ndots dots is
// asked as written first and then with each search domain after it; one
// with fewer, with each search domain first and as written last. A name
// with a search domain that would be too long is left out.
func (c resolvConfig) names(name string) []string {
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	asWrittenFirst := strings.Count(name, ".") >= c.ndots
	name += "."
	out := make([]string, 0, 1+len(c.search))
	if asWrittenFirst {
		out = append(out, name)
	}
	for _, domain := range c.search {
		if long := name + domain; len(long) <= maxNameLength {
			out = append(out, long)
		}
	}
	if !asWrittenFirst {
		out = append(out, name)
	}
	return out
}
