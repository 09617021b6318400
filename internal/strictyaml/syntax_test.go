package strictyaml_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/internal/strictyaml"
)

// A syntax error names the line (and the column, when it is known) of the
// fault, not the line where yaml's enclosing construct starts, counted
// from 0 or from 1, nor no line at all. Some cases yaml.v3 places right
// itself (a scanner error whose construct starts on the fault's line);
// they are here so that they stay right.
func TestSyntaxErrorPosition(t *testing.T) {
	for _, tc := range []struct {
		name, yaml   string
		line, column int
		msg          string // a part of the message
	}{
		// yaml.v3: "line 1: did not find expected '-' indicator"
		{"under-indented key in a list", "upstreams:\n  - name: x\n   registry: y\n", 3, 0,
			"did not find expected '-' indicator (in the list that starts on line 2)"},
		// yaml.v3: "line 5: did not find expected node content"
		{"bad flow scalar in a block", "a: 1\nb: 2\nc: 3\nd: 4\ne:\n  listen: [::]:1\n", 6, 0, "did not find expected node content"},
		{"bad flow scalar at the top", "a: 1\nb: 2\nc: 3\nd: 4\ne: 5\nlisten: [::]:1\n", 6, 0, "did not find expected node content"},
		// yaml.v3: "unknown anchor 'b' referenced"
		{"unknown anchor", "a: &a 1\n# *b here is a comment\nc: '*b'\nb: [1, *b]\n", 4, 8, "*b refers to no anchor &b"},
		{"unknown anchor first", "*b\n", 1, 1, "*b refers to no anchor"},
		// yaml.v3: "invalid leading UTF-8 octet"
		{"not UTF-8", "a: 1\nbé: \xff\n", 2, 5, "byte 0xFF is not UTF-8"},
		// yaml.v3: "invalid trailing UTF-8 octet"
		{"cut UTF-8", "a: 1\r\nb: x\xc3\n", 2, 5, "byte 0xC3 is not UTF-8"},
		// yaml.v3: "control characters are not allowed"
		{"control character", "a: 1\n\nb: x\x07\n", 3, 5, "control character U+0007"},
		// yaml.v3: "line 2: found a tab character that violates indentation"
		{"tab indentation", "upstreams:\n  - name: a\n\tweight: 1\n", 3, 0,
			"found a tab character that violates indentation (in the text that starts on line 2)"},
		// yaml.v3: "line 3: found character that cannot start any token"
		{"tab indentation of a value", "a: 1\nb:\n\tc: 1\n", 3, 0, "found character that cannot start any token"},
		// yaml.v3: "line 4: mapping values are not allowed in this context"
		{"over-indented key", "a: 1\nb:\n  c: 1\n    d: 2\n", 4, 0, "mapping values are not allowed"},
		// yaml.v3: "line 1: did not find expected key"
		{"under-indented key in a mapping", "a:\n  b:\n    c: 1\n   d: 2\n", 4, 0,
			"did not find expected key (in the mapping that starts on line 2)"},
		// yaml.v3: "line 2: did not find expected '-' indicator"
		{"key after a list", "a: 1\nb:\n  - x\n  y: 1\n", 4, 0, "did not find expected '-' indicator (in the list that starts on line 3)"},
		// yaml.v3: "line 1: did not find expected key"
		{"list item in a mapping", "a: 1\n- b\n", 2, 0, "did not find expected key"},
		// yaml.v3: "line 1: did not find expected key"
		{"text after a quoted string", "a: 1\nb: 'x'y\n", 2, 0, "did not find expected key"},
		// yaml.v3: "line 2: mapping values are not allowed in this context"
		{"colon in a plain scalar", "a: 1\nb: c: d\n", 2, 0, "mapping values are not allowed"},
		// yaml.v3: "line 2: found unexpected end of stream"; the quote opens on line 2
		{"unclosed quote", "a: 1\nb: 'abc\nc: 2\n", 2, 0, "found unexpected end of stream"},
		{"unclosed double quote", "a: 1\r\nb: \"abc\r\nc: 2\r\n", 2, 0, "found unexpected end of stream"},
		// yaml.v3: "line 1: did not find expected ',' or ']'"; the [ opens on line 2
		{"unclosed flow list", "a: 1\nb: [1, 2\nc: 2\n", 2, 0, "did not find expected ',' or ']'"},
		// yaml.v3: "line 1: did not find expected ',' or '}'"; the { opens on line 2
		{"unclosed flow mapping", "a: 1\nb: {x: 1\nc: 2\n", 2, 0, "did not find expected ',' or '}'"},
		// yaml.v3: "line 2: did not find expected ',' or ']'", the end of
		// the text counted from 0, a line that is not there
		{"unclosed flow list on the first line", "a: [1, 2\nb: 3\n", 2, 0, "did not find expected ',' or ']'"},
		// yaml.v3: "line 2: found character that cannot start any token"
		{"reserved character", "a: 1\nb: @x\n", 2, 0, "found character that cannot start any token"},
		// yaml.v3: "line 3: could not find expected ':'" (the fault: "-2"
		// is a key, at the list's indentation, without a colon)
		{"list item without a space", "a:\n  - 1\n  -2\n - 3\n", 3, 0, "could not find expected ':'"},
		// yaml.v3: "did not find expected key", no line: both on line 1
		{"first line", "a: 'x'y\n", 1, 0, "did not find expected key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d doc
			err := strictyaml.Unmarshal([]byte(tc.yaml), &d)
			var es strictyaml.Errors
			if !errors.As(err, &es) || len(es) != 1 {
				t.Fatalf("error %v; want one", err)
			}
			e := es[0]
			if e.Line != tc.line || e.Column != tc.column || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("got %q (line %d, column %d); want line %d, column %d, with %q",
					e.Error(), e.Line, e.Column, tc.line, tc.column, tc.msg)
			}
			if !strings.HasPrefix(e.Msg, "not valid YAML: ") {
				t.Errorf("message %q", e.Msg)
			}
		})
	}
}
