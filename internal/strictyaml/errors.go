package strictyaml

import (
	"errors"
	"fmt"
	"strings"
)

// Pos is where a value is written in a YAML document, 1-based; the zero
// Pos means the value is not in the document (a default, or a field that
// is missing).
type Pos struct {
	Line, Column int
}

// Error is one problem with one value: its field path, where it is written
// and what is wrong with it.
type Error struct {
	// File names the document; optional, it prefixes the message.
	File string
	// Pos is where the bad value is written; zero when it is not.
	Pos
	// Path is the value's field path, such as upstreams[0].retry; empty
	// for the document itself.
	Path string
	// Msg says what is wrong, in the configuration's terms.
	Msg string
}

// Error formats as "FILE: line L, column C: PATH: MSG", leaving out what
// is not known.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File + ": ")
	}
	switch {
	case e.Line > 0 && e.Column > 0:
		fmt.Fprintf(&b, "line %d, column %d: ", e.Line, e.Column)
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors are every problem found in a document, one per line.
type Errors []*Error

// Error joins the errors' messages, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the errors, for errors.As and errors.Is.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// InFile returns err with every Error in it naming file. An error that is
// not Errors or *Error gets file prefixed to each of its lines.
func InFile(file string, err error) error {
	var es Errors
	switch x := err.(type) {
	case nil:
		return nil
	case Errors:
		es = x
	case *Error:
		es = Errors{x}
	default:
		lines := strings.Split(err.Error(), "\n")
		for i, l := range lines {
			lines[i] = file + ": " + l
		}
		return errors.New(strings.Join(lines, "\n"))
	}
	out := make(Errors, len(es))
	for i, e := range es {
		c := *e
		c.File = file
		out[i] = &c
	}
	return out
}

// JoinPath appends the relative path rel to path: "a" and "b" give "a.b",
// "a" and "[0]" give "a[0]"; either may be empty.
func JoinPath(path, rel string) string {
	switch {
	case path == "":
		return rel
	case rel == "":
		return path
	case rel[0] == '[':
		return path + rel
	}
	return path + "." + rel
}

// parentPath strips the last element of path ("a.b[0]" → "a.b" → "a"
// → ""). A map key that holds a dot is cut at the dot, which only makes a
// parent's position the one found.
func parentPath(path string) string {
	i := max(strings.LastIndexByte(path, '.'), strings.LastIndexByte(path, '['))
	if i <= 0 {
		return ""
	}
	return path[:i]
}

// under reports whether path is base or a path inside it.
func under(path, base string) bool {
	if !strings.HasPrefix(path, base) {
		return false
	}
	rest := path[len(base):]
	return rest == "" || rest[0] == '.' || rest[0] == '['
}

// SplitPath splits a validation message of the form "PATH: MSG" into its
// path and message. A message whose first ": " is not preceded by a path
// (one word of letters, digits and _ - . / [ ]) has no path.
func SplitPath(msg string) (path, rest string) {
	i := strings.Index(msg, ": ")
	if i <= 0 || !isPath(msg[:i]) {
		return "", msg
	}
	return msg[:i], msg[i+2:]
}

func isPath(s string) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("_-./[]", r):
		default:
			return false
		}
	}
	return true
}
