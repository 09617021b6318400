package dns

import "testing"

// SetResolvConf makes the registries opened until t ends read path instead
// of /etc/resolv.conf, and ask its nameserver on port instead of 53.
func SetResolvConf(t testing.TB, path, port string) {
	oldPath, oldPort := resolvConf, resolvPort
	resolvConf, resolvPort = path, port
	t.Cleanup(func() { resolvConf, resolvPort = oldPath, oldPort })
}
