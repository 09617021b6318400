// Package asyncwrite writes log lines on a goroutine of its own, so that
// the goroutine that logs never waits for the reader: a log shipper that
// stalls, a full pipe or a terminal on hold would otherwise stop every
// request that writes an access log line (and /healthz would not notice).
// Lines that do not fit in the queue are dropped and counted.
package asyncwrite

import (
	"io"
	"sync/atomic"
	"time"
)

// Writer queues each Write and writes it to its output on its own
// goroutine, in order. Its methods are safe for concurrent use.
type Writer struct {
	out     io.Writer
	lines   chan []byte
	pending atomic.Int64 // queued or being written
	dropped atomic.Uint64
}

// New returns a Writer to out that holds up to queue lines. Its goroutine
// runs for the life of the process, as the standard streams it is made
// for do.
func New(out io.Writer, queue int) *Writer {
	w := &Writer{out: out, lines: make(chan []byte, queue)}
	go w.run()
	return w
}

func (w *Writer) run() {
	for p := range w.lines {
		_, _ = w.out.Write(p) // a failed write (EPIPE) loses the line, as it would unqueued
		w.pending.Add(-1)
	}
}

// Write queues a copy of p (a logger reuses its buffer) and returns at
// once. When the queue is full, p is dropped and counted; Write still
// reports success, as a logger has nothing better to do with the error.
func (w *Writer) Write(p []byte) (int, error) {
	line := append([]byte(nil), p...)
	w.pending.Add(1)
	select {
	case w.lines <- line:
	default:
		w.pending.Add(-1)
		w.dropped.Add(1)
	}
	return len(p), nil
}

// Unwrap returns the output, for a caller that asks whether it is a
// terminal.
func (w *Writer) Unwrap() io.Writer { return w.out }

// Dropped is how many lines were dropped because the queue was full.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Flush waits until every line queued so far is written, or for at most
// timeout; it reports whether they were.
func (w *Writer) Flush(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for w.pending.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}
