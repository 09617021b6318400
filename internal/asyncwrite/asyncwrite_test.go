package asyncwrite

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the writer's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Lines come out whole and in order, and a reused buffer does not change
// a line already queued.
func TestWriteKeepsLinesAndOrder(t *testing.T) {
	var out syncBuffer
	w := New(&out, 1024)
	buf := make([]byte, 0, 64)
	var want strings.Builder
	for i := range 100 {
		buf = fmt.Appendf(buf[:0], "line %d\n", i)
		if n, err := w.Write(buf); n != len(buf) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if !w.Flush(5 * time.Second) {
		t.Fatal("Flush timed out")
	}
	if out.String() != want.String() || w.Dropped() != 0 {
		t.Fatalf("wrote %q, dropped %d", out.String(), w.Dropped())
	}
}

// blockedPipe is a pipe nobody reads: writes to it wait for good.
func blockedPipe(t *testing.T) io.Writer {
	t.Helper()
	r, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); pw.Close() })
	return pw
}

// A reader that stalls does not stall the writer: every Write returns at
// once, what does not fit is dropped and counted, and Flush gives up at
// its timeout.
func TestStalledReaderNeverBlocksWrite(t *testing.T) {
	w := New(blockedPipe(t), 16)
	line := bytes.Repeat([]byte("x"), 32<<10) // two fill the pipe's buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			w.Write(line)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Write blocked on a stalled reader")
	}
	if d := w.Dropped(); d < 1000-16-4 {
		t.Fatalf("dropped %d of 1000 lines; the queue holds 16", d)
	}
	if w.Flush(50 * time.Millisecond) {
		t.Fatal("Flush reported a stalled queue written")
	}
}
