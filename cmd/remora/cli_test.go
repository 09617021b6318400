package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The command line as Go users expect it: help with descriptions on
// standard output and exit 0, per-command help, --version, validate with
// a positional file, and usage errors (unknown commands, flags, extra
// arguments) refused with exit 2.
func TestCommandLine(t *testing.T) {
	good := filepath.Join(t.TempDir(), "good.yaml")
	os.WriteFile(good, []byte("registries: [{name: s, type: static, static: {services: {a: [{address: \"127.0.0.1:1\"}]}}}]\nupstreams: [{name: a}]\n"), 0o644)
	for _, tc := range []struct {
		args      []string
		code      int
		out, errs string // substrings of standard output and error
	}{
		{[]string{"--help"}, 0, "Usage:", ""},
		{[]string{"-h"}, 0, "remora validate", ""},
		{[]string{"help"}, 0, "REMORA_LABELS", ""},
		{[]string{"help", "run"}, 0, "-log-format", ""},
		{[]string{"run", "--help"}, 0, "Usage: remora run -c FILE", ""},
		{[]string{"validate", "-h"}, 0, "Usage: remora validate", ""},
		{[]string{"--version"}, 0, "remora ", ""},
		{[]string{"version"}, 0, "remora ", ""},
		{[]string{"validate", good}, 0, "good.yaml: ok", ""},
		{[]string{"validate", "-c", good}, 0, "good.yaml: ok", ""},
		{[]string{}, 2, "", "Usage:"},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"help", "frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"run", "--frob"}, 2, "", "flag provided but not defined: -frob"},
		{[]string{"run", "-c", good, "extra"}, 2, "", `unexpected argument "extra"`},
		{[]string{"run"}, 2, "", "-c FILE is required"},
		{[]string{"validate"}, 2, "", "which file?"},
		{[]string{"validate", good, good}, 2, "", "one file at a time"},
		{[]string{"validate", "-c", good, good}, 2, "", `unexpected argument`},
		{[]string{"demo", "extra"}, 2, "", `unexpected argument "extra"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errs bytes.Buffer
			code := run(tc.args, &out, &errs)
			if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errs.String(), tc.errs) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					code, out.String(), errs.String(), tc.code, tc.out, tc.errs)
			}
		})
	}
}
