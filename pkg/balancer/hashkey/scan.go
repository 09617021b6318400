package hashkey

import "strings"

// cookie returns the value of the first valid cookie called name in the
// Cookie header lines, following net/http's readCookies and
// parseCookieValue, without allocating.
func cookie(lines []string, name string) string {
	for _, line := range lines {
		line = trim(line)
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = trim(part)
			if part == "" {
				continue
			}
			n, val, _ := strings.Cut(part, "=")
			if trim(n) != name { // name is a valid token
				continue
			}
			if len(val) > 1 && val[0] == '"' && val[len(val)-1] == '"' {
				val = val[1 : len(val)-1]
			}
			if validCookieValue(val) {
				return val
			}
		}
	}
	return ""
}

func validCookieValue(v string) bool {
	for i := 0; i < len(v); i++ {
		b := v[i]
		if b < 0x20 || b >= 0x7f || b == '"' || b == ';' || b == '\\' {
			return false
		}
	}
	return true
}

// trim is textproto.TrimString: it strips ASCII space, tab, CR and LF.
func trim(s string) string {
	for len(s) > 0 && isASCIISpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isASCIISpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

func isASCIISpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }

// query hashes the first value of the parameter called name in the raw
// query, unescaped, following url.ParseQuery (pairs split on '&'; a pair
// holding ';' or a bad escape is skipped; '+' is a space), without
// allocating: keys are compared and values hashed while unescaping. An
// absent or empty value has no hash.
func query(raw, name string) (uint64, bool) {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" || strings.IndexByte(pair, ';') >= 0 {
			continue
		}
		key, val, _ := strings.Cut(pair, "=")
		eq, ok := unescapedEqual(key, name)
		if !ok || !eq {
			continue
		}
		h, n, ok := hashUnescaped(val)
		if !ok {
			continue // url.ParseQuery drops the pair
		}
		if n == 0 {
			return 0, false
		}
		return h, true
	}
	return 0, false
}

// unescape decodes the escape at s[i] ('%XX' or '+') or the plain byte
// there, returning the byte, the bytes consumed and whether it was valid.
func unescape(s string, i int) (byte, int, bool) {
	switch c := s[i]; c {
	case '%':
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return 0, 0, false
		}
		return unhex(s[i+1])<<4 | unhex(s[i+2]), 3, true
	case '+':
		return ' ', 1, true
	default:
		return c, 1, true
	}
}

// unescapedEqual reports whether QueryUnescape(s) == want; ok is false when
// s has a bad escape.
func unescapedEqual(s, want string) (eq, ok bool) {
	eq = true
	j := 0
	for i := 0; i < len(s); {
		b, n, valid := unescape(s, i)
		if !valid {
			return false, false
		}
		i += n
		if eq {
			if j < len(want) && want[j] == b {
				j++
			} else {
				eq = false
			}
		}
	}
	return eq && j == len(want), true
}

// hashUnescaped hashes QueryUnescape(s) and returns its length; ok is false
// when s has a bad escape.
func hashUnescaped(s string) (h uint64, n int, ok bool) {
	hs := NewHasher()
	for i := 0; i < len(s); {
		b, w, valid := unescape(s, i)
		if !valid {
			return 0, 0, false
		}
		i += w
		hs = hs.AddByte(b)
		n++
	}
	return hs.Sum(), n, true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
