package upstream_test

import (
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// TestBadCanaryWeightLabelIsReported: a canary instance's weight label
// that is not a percentage is ignored (the weight comes from the config),
// and not in silence: the controller warns once, naming the node, the
// label and its value, and the canary split shows it until the label is
// fixed.
func TestBadCanaryWeightLabelIsReported(t *testing.T) {
	for _, value := range []string{"abc", "150", "-1"} {
		t.Run(value, func(t *testing.T) {
			logger, hook := logtest.NewNullLogger()
			rule, err := (&canary.Config{Weight: 5}).Validate()
			if err != nil {
				t.Fatal(err)
			}
			u, _, set := run(t, upstream.Config{Name: "svc", Canary: rule, Log: logrus.NewEntry(logger)})
			warnings := func() (out []*logrus.Entry) {
				for _, e := range hook.AllEntries() {
					if e.Level == logrus.WarnLevel && e.Data["label"] != nil {
						out = append(out, e)
					}
				}
				return out
			}
			s := set(inst("a", 1), canaryInst("c1", 3, value))
			if s.Canary.Weight != 5 || s.Canary.WeightFrom != "config" {
				t.Fatalf("weight %v from %s; want the config's 5", s.Canary.Weight, s.Canary.WeightFrom)
			}
			w := warnings()
			if len(w) != 1 || w[0].Data["upstream"] != "svc" || w[0].Data["node"] != "c1" ||
				w[0].Data["label"] != "canary-weight" || w[0].Data["value"] != value || w[0].Data[logrus.ErrorKey] == nil {
				t.Fatalf("warnings %v; want one naming upstream svc, node c1, label canary-weight, value %q and why", w, value)
			}
			if e := s.Canary.LabelError; !strings.Contains(e, "c1") || !strings.Contains(e, "canary-weight") || !strings.Contains(e, value) {
				t.Fatalf("the canary split's label error %q; want it to name c1, canary-weight and %q", e, value)
			}

			set(inst("a", 1), inst("b", 2), canaryInst("c1", 3, value))
			u.Rebuild()
			set(inst("a", 1), canaryInst("c1", 3, value))
			if w := warnings(); len(w) != 1 {
				t.Fatalf("%d warnings after more node sets with the same bad label; want it reported once", len(w))
			}

			s = set(inst("a", 1), canaryInst("c1", 3, "20"))
			if s.Canary.LabelError != "" || s.Canary.Weight != 20 || s.Canary.WeightFrom != "registry" {
				t.Fatalf("label fixed: weight %v from %s, label error %q", s.Canary.Weight, s.Canary.WeightFrom, s.Canary.LabelError)
			}
		})
	}
}
