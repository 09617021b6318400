package kubernetes

import (
	"fmt"
	"sync"

	"github.com/go-logr/logr"
	"github.com/sirupsen/logrus"
	"k8s.io/klog/v2"
)

var klogOnce sync.Once

// bridgeKlog sends what client-go logs through klog (by default to standard
// error, in klog's own format) to log instead, once per process: the first
// registry opened wins. Errors are logged as warnings, messages of
// verbosity 0 at debug level, and more verbose ones not at all.
func bridgeKlog(log *logrus.Entry) {
	klogOnce.Do(func() {
		klog.SetLogger(logr.New(&klogSink{log: log.WithField("component", "client-go")}))
	})
}

// klogSink is a logr.LogSink over logrus. It is immutable; With* return
// copies.
type klogSink struct {
	log *logrus.Entry
}

var _ logr.LogSink = (*klogSink)(nil)

func (s *klogSink) Init(logr.RuntimeInfo) {}

func (s *klogSink) Enabled(level int) bool {
	return level == 0 && s.log.Logger.IsLevelEnabled(logrus.DebugLevel)
}

func (s *klogSink) Info(level int, msg string, kv ...any) {
	if level == 0 {
		s.with(kv).Debug(msg)
	}
}

func (s *klogSink) Error(err error, msg string, kv ...any) {
	s.with(kv).WithError(err).Warn(msg)
}

func (s *klogSink) WithValues(kv ...any) logr.LogSink {
	return &klogSink{log: s.with(kv)}
}

func (s *klogSink) WithName(name string) logr.LogSink {
	return &klogSink{log: s.log.WithField("logger", name)}
}

func (s *klogSink) with(kv []any) *logrus.Entry {
	if len(kv) == 0 {
		return s.log
	}
	f := make(logrus.Fields, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		f[fmt.Sprint(kv[i])] = kv[i+1]
	}
	return s.log.WithFields(f)
}
