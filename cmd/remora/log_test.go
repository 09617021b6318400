package main

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// millis matches an RFC 3339 time with exactly three fractional digits.
var millis = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)`)

// Both logs stamp every line to the millisecond, in every format.
func TestLogTimestampsHaveMilliseconds(t *testing.T) {
	for _, tc := range []struct {
		name string
		log  func(*bytes.Buffer) error
		// field extracts the time from a line.
		field func(line string) (string, error)
	}{
		{"process json", func(b *bytes.Buffer) error {
			l, err := newLogger(b, "info", "json")
			if err == nil {
				l.Info("hello")
			}
			return err
		}, jsonTime},
		{"process text", func(b *bytes.Buffer) error {
			l, err := newLogger(b, "info", "text")
			if err == nil {
				l.Info("hello")
			}
			return err
		}, func(line string) (string, error) {
			_, rest, _ := strings.Cut(line, `time="`)
			ts, _, _ := strings.Cut(rest, `"`)
			return ts, nil
		}},
		{"process auto (not a terminal)", func(b *bytes.Buffer) error {
			l, err := newLogger(b, "info", "auto")
			if err == nil {
				l.Info("hello")
			}
			return err
		}, jsonTime},
		{"access", func(b *bytes.Buffer) error {
			newAccessLogger(b).Info("GET /")
			return nil
		}, jsonTime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tc.log(&buf); err != nil {
				t.Fatal(err)
			}
			ts, err := tc.field(buf.String())
			if err != nil {
				t.Fatalf("%v: %s", err, buf.String())
			}
			if !millis.MatchString(ts) || millis.FindString(ts) != ts {
				t.Fatalf("time %q is not RFC 3339 with milliseconds; line: %s", ts, buf.String())
			}
			at, err := time.Parse(TimestampFormat, ts)
			if err != nil || time.Since(at).Abs() > time.Minute {
				t.Fatalf("time %q: %v (now %s)", ts, err, time.Now())
			}
		})
	}
}

func jsonTime(line string) (string, error) {
	var v struct {
		Time string `json:"time"`
	}
	err := json.Unmarshal([]byte(line), &v)
	return v.Time, err
}

// What logs through logrus's standard logger (a union of registries or a
// relay containing a panic) is written as the process log is: its
// output, format and level, not logrus's text on standard error.
func TestStandardLoggerWritesAsTheProcessLog(t *testing.T) {
	std := logrus.StandardLogger()
	out, formatter, level := std.Out, std.Formatter, std.GetLevel()
	defer func() {
		std.SetOutput(out)
		std.SetFormatter(formatter)
		std.SetLevel(level)
	}()
	var buf bytes.Buffer
	l, err := newLogger(&buf, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	asStandardLogger(l)
	logrus.Info("below the level")
	logrus.WithField("part", 1).Error("contained")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil || line["msg"] != "contained" || line["part"] != 1.0 {
		t.Fatalf("the standard logger wrote %q (%v); want one JSON line of the process log", buf.String(), err)
	}
}
