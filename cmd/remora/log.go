package main

import (
	"fmt"
	"io"
	"log"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/internal/stdlog"
)

// newLogger returns a logrus logger writing to w: text when format is
// "text" (or "auto" on a terminal), JSON otherwise.
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
		l.SetFormatter(&logrus.JSONFormatter{})
	case "text":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "auto", "":
		if isTerminal(w) {
			l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
		} else {
			l.SetFormatter(&logrus.JSONFormatter{})
		}
	default:
		return nil, fmt.Errorf("--log-format: %q; want auto, text or json", format)
	}
	return l, nil
}

func isTerminal(w io.Writer) bool {
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

// newAccessLogger returns the access logger: JSON lines with a "log":
// "access" field.
func newAccessLogger(w io.Writer) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(w)
	l.SetFormatter(&logrus.JSONFormatter{})
	return l.WithField("log", "access")
}
