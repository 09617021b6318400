package h1diff

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Step is one write of a raw client: Send after waiting Pause, then, with
// CloseWrite, the end of what the client sends (a TCP half-close: it
// still reads).
type Step struct {
	Pause      time.Duration
	Send       string
	CloseWrite bool
}

// Outcome is what a client received on one connection.
type Outcome struct {
	Raw       []byte
	Responses []Response
	// Rest is what follows the last answer that parses, if anything.
	Rest []byte
	// Closed: the proxy closed the connection (or reset it) before the
	// client stopped listening; ClosedAfter is how long after the last
	// step was sent.
	Closed      bool
	ClosedAfter time.Duration
}

// Response is one answer a client received.
type Response struct {
	Status int
	Req    string // X-Req: the request a node answered; "" for the proxy's own
	Header http.Header
	Body   string
	// Cut: the body broke off (the connection ended inside it).
	Cut bool
}

// Name is a response's identity for comparison: the request a node
// answered, or "proxy <status>" for the proxy's own answers.
func (r Response) Name() string {
	if r.Req != "" {
		return fmt.Sprintf("%s (%d)", r.Req, r.Status)
	}
	return fmt.Sprintf("proxy %d", r.Status)
}

// Limits of a client's wait.
type Wait struct {
	// Quiet ends the wait when nothing arrived for this long after the
	// last step.
	Quiet time.Duration
	// Max ends it this long after the last step, whatever arrives.
	Max time.Duration
	// Answered ends it once every request sent has a final answer and
	// nothing more came for Settle.
	Answered bool
	Settle   time.Duration
}

// finalAnswers counts the final (not 1xx) answers to the requests
// methods that raw holds whole.
func finalAnswers(raw []byte, methods []string) int {
	o := Outcome{Raw: raw}
	o.Parse(methods)
	n := 0
	for _, r := range o.Responses {
		if !r.Cut && (r.Status >= 200 || r.Status == http.StatusSwitchingProtocols) {
			n++
		}
	}
	return n
}

// Exchange dials addr, sends the steps and collects what comes back until
// the proxy closes the connection or w ends the wait.
func Exchange(addr string, steps []Step, w Wait) (Outcome, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return Outcome{}, err
	}
	defer c.Close()
	var (
		mu       sync.Mutex
		raw      []byte
		lastRead = time.Now()
		closedAt time.Time // when the proxy ended the connection
		stopping bool      // we end it
		done     = make(chan struct{})
	)
	go func() {
		defer close(done)
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			mu.Lock()
			raw = append(raw, buf[:n]...)
			if n > 0 {
				lastRead = time.Now()
			}
			if err != nil {
				if !stopping {
					closedAt = time.Now()
				}
				mu.Unlock()
				return
			}
			mu.Unlock()
		}
	}()
	for _, s := range steps {
		if s.Pause > 0 {
			select {
			case <-time.After(s.Pause):
			case <-done:
			}
		}
		if _, err := io.WriteString(c, s.Send); err != nil {
			break // the proxy closed: what it sent is the outcome
		}
		if s.CloseWrite {
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				break
			}
		}
	}
	sent := time.Now()
	mu.Lock()
	lastRead = sent
	mu.Unlock()
	var all strings.Builder
	for _, s := range steps {
		all.WriteString(s.Send)
	}
	methods := Methods(all.String())
	deadline := sent.Add(w.Max)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-done:
			break wait
		case now := <-tick.C:
			mu.Lock()
			idle, got := now.Sub(lastRead), raw
			mu.Unlock()
			switch {
			case now.After(deadline), idle >= w.Quiet:
				break wait
			case w.Answered && idle >= w.Settle && finalAnswers(got, methods) >= len(methods):
				break wait
			}
		}
	}
	mu.Lock()
	stopping = true
	mu.Unlock()
	c.Close()
	<-done
	out := Outcome{Raw: raw}
	if !closedAt.IsZero() {
		out.Closed, out.ClosedAfter = true, max(closedAt.Sub(sent), 0)
	}
	return out, nil
}

// Parse splits raw into the answers to the requests methods (in order;
// GET past the end), keeping what does not parse as Rest.
func (o *Outcome) Parse(methods []string) {
	consumed := 0
	counted := &countReader{r: bytes.NewReader(o.Raw)}
	br := bufio.NewReader(counted)
	final := 0 // final answers so far: the index of the request answered next
	for {
		if _, err := br.Peek(1); err != nil {
			break
		}
		method := http.MethodGet
		if final < len(methods) {
			method = methods[final]
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			break
		}
		body, err := io.ReadAll(resp.Body)
		r := Response{Status: resp.StatusCode, Req: resp.Header.Get("X-Req"), Header: resp.Header, Body: string(body), Cut: err != nil}
		o.Responses = append(o.Responses, r)
		consumed = counted.n - br.Buffered()
		if err != nil {
			break
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			final++
		}
	}
	o.Rest = o.Raw[consumed:]
}

type countReader struct {
	r io.Reader
	n int
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// Methods returns the methods of the requests in raw, in order, as far as
// they parse.
func Methods(raw string) []string {
	var out []string
	br := bufio.NewReader(strings.NewReader(raw))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return out
		}
		out = append(out, req.Method)
		if req.Body != nil {
			_, _ = io.Copy(io.Discard, req.Body)
		}
	}
}
