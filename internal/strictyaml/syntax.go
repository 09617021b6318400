package strictyaml

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// go.yaml.in/yaml/v3 places its syntax errors poorly ("yaml: line N: msg",
// decode.go parser.fail): N is the line where the enclosing construct
// starts (the list, the mapping, the quoted string), not the line of the
// fault; for a parser error it is that line counted from 0; when the
// construct starts on the first line it is the fault's line instead; and
// reader errors (bad UTF-8, control characters) and unknown anchors carry
// no line at all. syntaxError finds the real position: by scanning the
// bytes for a reader error, by finding the alias for an unknown anchor,
// and otherwise by finding the first line at which the document, cut
// after that line, fails with the very same error.

// probeBudget bounds the bytes re-parsed to place one syntax error, so
// that a large document costs a linear number of parses at most.
const probeBudget = 4 << 20

// parserProblems are the problems yaml.v3's parser (not its scanner)
// reports, with what its context ("while parsing a ...") is in plain
// words, or "" when it has none. A parser error's line is counted from 0.
var parserProblems = map[string]string{
	"did not find expected '-' indicator":    "the list",
	"did not find expected key":              "the mapping",
	"did not find expected ',' or ']'":       "the [ ] list",
	"did not find expected ',' or '}'":       "the { } mapping",
	"did not find expected node content":     "the value",
	"found undefined tag handle":             "the value",
	"did not find expected <stream-start>":   "",
	"did not find expected <document start>": "",
	"found duplicate %YAML directive":        "",
	"found incompatible YAML document":       "",
	"found duplicate %TAG directive":         "",
	"unknown problem parsing YAML content":   "",
}

// readerProblems are the problems yaml.v3's reader reports, without a
// position.
var readerProblems = []string{
	"invalid leading UTF-8 octet",
	"incomplete UTF-8 octet sequence",
	"invalid trailing UTF-8 octet",
	"invalid length of a UTF-8 sequence",
	"invalid Unicode character",
	"control characters are not allowed",
}

// syntaxError turns yaml's error for data into an Error at the fault.
func syntaxError(data []byte, err error) *Error {
	full := err.Error()
	msg := strings.TrimPrefix(full, "yaml: ")
	var line int
	if _, scanErr := fmt.Sscanf(msg, "line %d:", &line); scanErr == nil {
		msg = strings.TrimSpace(strings.TrimPrefix(msg, fmt.Sprintf("line %d:", line)))
	} else {
		line = 0
	}
	if slices.Contains(readerProblems, msg) {
		if e := readerError(data); e != nil {
			return e
		}
		return &Error{Msg: "not valid YAML: " + msg}
	}
	if name, ok := strings.CutPrefix(msg, "unknown anchor '"); ok {
		name = strings.TrimSuffix(name, "' referenced")
		e := &Error{Msg: fmt.Sprintf("not valid YAML: *%s refers to no anchor &%s written before it", name, name)}
		if pos, ok := unknownAlias(data, name); ok {
			e.Pos = pos
		}
		return e
	}
	// The construct yaml names starts on line start, and the fault is on
	// it or after it.
	what, parserErr := parserProblems[msg]
	start := line
	if parserErr {
		start++
	} else {
		what = "the text"
	}
	// yaml names the end of the text, after the last line break, as a
	// line of its own.
	start = min(max(start, 1), len(lineEnds(data)))
	at := faultLine(data, full, start)
	if at == 0 {
		return &Error{Msg: fmt.Sprintf("not valid YAML: %s (on line %d or after it)", msg, start)}
	}
	// When the fault is after the line yaml names, that line is where
	// the construct starts (had the construct started on the first line,
	// yaml would have named the fault's line).
	if at > start && line > 0 && what != "" {
		msg += fmt.Sprintf(" (in %s that starts on line %d)", what, start)
	}
	return &Error{Pos: Pos{Line: at}, Msg: "not valid YAML: " + msg}
}

// lineEnds returns the offset just past each line of data, its line
// break included; a line breaks at LF, CRLF or CR, as in yaml's marks.
func lineEnds(data []byte) []int {
	var ends []int
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '\n':
			ends = append(ends, i+1)
		case '\r':
			if i+1 < len(data) && data[i+1] == '\n' {
				i++
			}
			ends = append(ends, i+1)
		}
	}
	if len(ends) == 0 || ends[len(ends)-1] < len(data) {
		ends = append(ends, len(data))
	}
	return ends
}

// position returns the 1-based line and column (in characters) of the
// byte at offset off of data.
func position(data []byte, off int) Pos {
	line, lineStart := 1, 0
	for _, end := range lineEnds(data) {
		if end > off {
			break
		}
		line, lineStart = line+1, end
	}
	return Pos{Line: line, Column: utf8.RuneCount(data[lineStart:off]) + 1}
}

// readerError places the first character yaml's reader refuses in UTF-8
// data: a byte that is not UTF-8, or a control character. It returns nil
// for a document in UTF-16 (yaml reads it by its byte order mark) or
// when it finds no such character.
func readerError(data []byte) *Error {
	if bytes.HasPrefix(data, []byte{0xFE, 0xFF}) || bytes.HasPrefix(data, []byte{0xFF, 0xFE}) {
		return nil
	}
	for off := 0; off < len(data); {
		r, size := utf8.DecodeRune(data[off:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return &Error{Pos: position(data, off), Msg: fmt.Sprintf(
				"not valid YAML: byte 0x%02X is not UTF-8 text; save the file as UTF-8", data[off])}
		case !yamlPrintable(r):
			return &Error{Pos: position(data, off), Msg: fmt.Sprintf(
				"not valid YAML: control character %U is not allowed; remove it, or write it as an escape such as \"\\x%02X\" in a double-quoted string", r, r)}
		}
		off += size
	}
	return nil
}

// yamlPrintable reports whether yaml's reader accepts r (readerc.go).
func yamlPrintable(r rune) bool {
	switch {
	case r == 0x09, r == 0x0A, r == 0x0D, r >= 0x20 && r <= 0x7E, r == 0x85,
		r >= 0xA0 && r <= 0xD7FF, r >= 0xE000 && r <= 0xFFFD, r >= 0x10000 && r <= 0x10FFFF:
		return true
	}
	return false
}

// maxAliasProbes bounds the candidate aliases tried for an unknown anchor.
const maxAliasProbes = 64

// unknownAlias finds the alias *name that yaml refused. Every "*name" in
// the text that is not followed by another anchor character may be it
// (or may be in a comment or a quoted string); yaml refuses the first
// alias *name in the document, so the first candidate whose renaming to
// an unused name makes yaml refuse that name instead is the one.
func unknownAlias(data []byte, name string) (Pos, bool) {
	fresh := "strictyaml-probe"
	for n := 0; bytes.Contains(data, []byte(fresh)); n++ {
		fresh = "strictyaml-probe-" + strconv.Itoa(n)
	}
	want := "yaml: unknown anchor '" + fresh + "' referenced"
	ref := []byte("*" + name)
	probes := 0
	for off := 0; probes < maxAliasProbes; off++ {
		i := bytes.Index(data[off:], ref)
		if i < 0 {
			break
		}
		off += i
		if end := off + len(ref); end < len(data) && isAnchorChar(data[end]) {
			continue
		}
		probes++
		probe := make([]byte, 0, len(data)+len(fresh))
		probe = append(probe, data[:off+1]...)
		probe = append(probe, fresh...)
		probe = append(probe, data[off+len(ref):]...)
		var doc yaml.Node
		if err := yaml.Unmarshal(probe, &doc); err != nil && err.Error() == want {
			return position(data, off), true
		}
	}
	return Pos{}, false
}

func isAnchorChar(b byte) bool {
	return b >= '0' && b <= '9' || b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b == '_' || b == '-'
}

// faultLine returns the first line, from line from on, such that data cut
// after it fails to parse with the error full, or 0 if it finds none
// within probeBudget. The tokens yaml reads before the fault do not depend
// on the lines after the fault's, and an end of text inside a block
// mapping or list is no error, so the line found is the fault's; inside an
// unclosed quoted string or [ ] or { } the end of the text is the error,
// and the line found is the one where it starts.
func faultLine(data []byte, full string, from int) int {
	ends := lineEnds(data)
	spent := 0
	for l := from; l <= len(ends); l++ {
		prefix := data[:ends[l-1]]
		if spent += len(prefix); spent > probeBudget {
			return 0
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(prefix, &doc); err != nil && err.Error() == full {
			return l
		}
	}
	return 0
}
