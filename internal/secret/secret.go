// Package secret holds what the registry adapters share for credentials in
// their options: a string type that is never printed, and reading one from
// a file.
package secret

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/remora-mesh/remora/internal/regularfile"
)

// Redacted is what a non-empty Secret prints as.
const Redacted = "[redacted]"

// Secret is a string that formats as "[redacted]" (when non-empty) in every
// fmt verb and in text/JSON/YAML encodings, so a token or password cannot
// leak into logs or a config dump. Use string(s) to read it.
type Secret string

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// GoString covers %#v.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// MarshalText covers encoders (JSON, YAML).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText stores the secret as written.
func (s *Secret) UnmarshalText(b []byte) error {
	*s = Secret(b)
	return nil
}

// ReadFile reads a secret from the file path, trimming white space. Errors
// start with field (the option that named the file); an empty file is an
// error that asks to write what (e.g. "the ACL token") into it. Only a
// regular file of at most regularfile.MaxSize bytes is read: a named pipe,
// a device or a directory is an error that says so, at once.
func ReadFile(field, path, what string) (string, error) {
	b, err := regularfile.ReadFileMax(path, regularfile.MaxSize)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s: %s is empty; write %s into it", field, path, what)
	}
	return v, nil
}

// Userinfo reports whether addr, a registry address (host:port, or a URL
// such as http://user:pass@host:port/path), carries a user name or
// password before its host, and returns addr with that part replaced by
// Redacted, fit to quote in an error.
func Userinfo(addr string) (redacted string, ok bool) {
	rest, prefix := addr, ""
	if i := strings.Index(addr, "://"); i >= 0 {
		prefix, rest = addr[:i+3], addr[i+3:]
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return addr, false
	}
	return prefix + Redacted + rest[at:], true
}

// UserinfoError is the error of an address that carries credentials: it
// names the field that takes them instead, and never shows them.
func UserinfoError(addr, instead string) error {
	redacted, _ := Userinfo(addr)
	return fmt.Errorf("%q: credentials in the address are not supported (they would be logged); use %s", redacted, instead)
}
