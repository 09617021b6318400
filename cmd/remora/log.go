package main

import (
	"fmt"
	"io"
	"log"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/internal/asyncwrite"
	"github.com/remora-mesh/remora/internal/stdlog"
)

// TimestampFormat is the time of every line of both logs: RFC 3339 with
// milliseconds, always three digits, so lines sort and align
// (2006-01-02T15:04:05.000+02:00).
const TimestampFormat = "2006-01-02T15:04:05.000Z07:00"

// newLogger returns a logrus logger writing to w: text when format is
// "text" (or "auto" on a terminal), JSON otherwise; times to the
// millisecond (TimestampFormat).
func newLogger(w io.Writer, level, format string) (*logrus.Logger, error) {
	l := logrus.New()
	l.SetOutput(w)
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %q; want one of panic, fatal, error, warn, info, debug, trace", level)
	}
	l.SetLevel(lvl)
	switch format {
	case "json":
		l.SetFormatter(jsonFormatter())
	case "text":
		l.SetFormatter(textFormatter())
	case "auto", "":
		if isTerminal(w) {
			l.SetFormatter(textFormatter())
		} else {
			l.SetFormatter(jsonFormatter())
		}
	default:
		return nil, fmt.Errorf("--log-format: %q; want auto, text or json", format)
	}
	return l, nil
}

// asStandardLogger makes logrus's standard logger write as l does (its
// output, format and level): what logs through it (a union of registries
// or a relay containing a panic, which have no logger of their own; a
// library) then reads as the process log, in its queue.
func asStandardLogger(l *logrus.Logger) {
	std := logrus.StandardLogger()
	std.SetOutput(l.Out)
	std.SetFormatter(l.Formatter)
	std.SetLevel(l.GetLevel())
}

func jsonFormatter() *logrus.JSONFormatter {
	return &logrus.JSONFormatter{TimestampFormat: TimestampFormat}
}

func textFormatter() *logrus.TextFormatter {
	return &logrus.TextFormatter{FullTimestamp: true, TimestampFormat: TimestampFormat}
}

func isTerminal(w io.Writer) bool {
	if u, ok := w.(interface{ Unwrap() io.Writer }); ok {
		w = u.Unwrap() // an asyncwrite.Writer
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// newStdLogger adapts logrus for net/http's ErrorLog.
func newStdLogger(e *logrus.Entry) *log.Logger {
	return stdlog.New(e, logrus.WarnLevel)
}

// accessLogOutput is where access log lines go: standard output, apart from
// the process log on standard error.
var accessLogOutput io.Writer = os.Stdout

// The two logs of `remora run`, each written on a goroutine of its own
// (nil in tests that start an app in the test process).
var processLogWriter, accessLogWriter *asyncwrite.Writer

// logQueue is how many lines a log holds while its reader does not keep
// up; more are dropped (remora_log_lines_dropped_total).
const logQueue = 8192

// LogLinesDropped implements admin.LogSource.
func (a *app) LogLinesDropped() map[string]uint64 {
	m := map[string]uint64{}
	if w := processLogWriter; w != nil {
		m["process"] = w.Dropped()
	}
	if w := accessLogWriter; w != nil {
		m["access"] = w.Dropped()
	}
	return m
}

// newAccessLogger returns the access logger: JSON lines with a "log":
// "access" field, times to the millisecond (TimestampFormat).
func newAccessLogger(w io.Writer) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(w)
	l.SetFormatter(jsonFormatter())
	return l.WithField("log", "access")
}
