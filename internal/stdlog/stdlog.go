// Package stdlog adapts a logrus entry to the standard library's
// *log.Logger, which net/http and httputil take for their error logs.
package stdlog

import (
	"log"
	"strings"

	"github.com/sirupsen/logrus"
)

// New returns a *log.Logger whose lines go to e at level. Unlike
// logrus's WriterLevel it starts no goroutine (and so needs no closing):
// each line is logged on the caller's goroutine. It is safe for concurrent
// use.
func New(e *logrus.Entry, level logrus.Level) *log.Logger {
	return log.New(writer{e: e, level: level}, "", 0)
}

type writer struct {
	e     *logrus.Entry
	level logrus.Level
}

func (w writer) Write(p []byte) (int, error) {
	w.e.Log(w.level, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
