package h1diff

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// relay is a proxy with no HTTP in it: each client connection gets its
// own node connection and the bytes flow through unread, so whatever the
// node sends after an answer reaches the client.
func relay(nodeAddr string) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n, err := net.Dial("tcp", nodeAddr)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(n, c)
			go pipe(c, n)
		}
	}()
	return ln.Addr().String(), func() { ln.Close(); wg.Wait() }, nil
}

func caseNamed(t *testing.T, name string) Case {
	for _, c := range Cases(Limits{MaxHeaderBytes: 8 << 10}) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no case %q", name)
	return Case{}
}

// TestCompareWithReference: running the reference again must not hide a
// difference that is the proxy's own, and must not invent one for the
// reference itself.
func TestCompareWithReference(t *testing.T) {
	lim := Limits{ReadHeaderTimeout: 400e6, IdleTimeout: 2e9, MaxHeaderBytes: 8 << 10, MaxResponseHeaderBytes: 16 << 10}
	c := caseNamed(t, "node/HEAD answered with a body and a second answer")

	got, err := Run(c, relay)
	if err != nil {
		t.Fatal(err)
	}
	_, diffs, err := CompareWithReference(c, lim, got, Rules{AllowStricter: true, IgnoreAnswers: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(diffs, "\n"), "/evil") {
		t.Errorf("a relay passes the node's unsolicited answer on; got differences %q, want one naming /evil", diffs)
	}

	same, err := Run(c, Reference(lim))
	if err != nil {
		t.Fatal(err)
	}
	if _, diffs, err := CompareWithReference(c, lim, same, Rules{}); err != nil || len(diffs) > 0 {
		t.Errorf("the reference against itself: %q, %v", diffs, err)
	}
}
