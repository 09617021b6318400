package kubernetes

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/sirupsen/logrus"
)

// What client-go logs through klog reaches logrus: errors as warnings,
// verbosity 0 at debug level (when enabled), more verbose lines not at all.
func TestKlogSink(t *testing.T) {
	tests := []struct {
		name  string
		level logrus.Level
		log   func(l logr.Logger)
		want  []string // substrings of the output; nil: no output
	}{
		{"error as a warning", logrus.InfoLevel, func(l logr.Logger) { l.Error(errors.New("boom"), "watch failed", "resource", "endpointslices") },
			[]string{"level=warning", `msg="watch failed"`, "error=boom", "resource=endpointslices", "component=client-go"}},
		{"info at debug level", logrus.DebugLevel, func(l logr.Logger) { l.WithName("reflector").Info("listing", "n", 3) },
			[]string{"level=debug", "msg=listing", "n=3", "logger=reflector"}},
		{"info dropped at info level", logrus.InfoLevel, func(l logr.Logger) { l.Info("listing") }, nil},
		{"verbose dropped", logrus.TraceLevel, func(l logr.Logger) { l.V(2).Info("noise") }, nil},
		{"values kept", logrus.DebugLevel, func(l logr.Logger) { l.WithValues("ns", "shop").Info("synced") },
			[]string{"ns=shop", "msg=synced"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			lg := logrus.New()
			lg.SetOutput(&buf)
			lg.SetLevel(tc.level)
			lg.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
			tc.log(logr.New(&klogSink{log: logrus.NewEntry(lg).WithField("component", "client-go")}))
			out := buf.String()
			if tc.want == nil {
				if out != "" {
					t.Fatalf("logged %q; want nothing", out)
				}
				return
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Fatalf("output %q lacks %q", out, w)
				}
			}
		})
	}
}
