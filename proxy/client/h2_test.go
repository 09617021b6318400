package client_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/remora-mesh/remora/internal/testnet"
	"github.com/remora-mesh/remora/proxy/client"
)

// A request that an HTTP/2 node does not process ends within a second
// with ErrNotProcessed, in a dial error (nothing reached the node's
// application: the call may go to another node), instead of being sent
// to the same node again for a minute, as net/http's HTTP/2 code does. A
// node that closes a connection with GOAWAY before the stream and serves
// it on the next one (a connection reaching its maximum age) serves it.
func TestH2RequestTheNodeDidNotProcess(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answer  testnet.H2Answer
		served  bool
		streams int64 // the node was sent, at most
	}{
		{"every stream refused", func(fr *http2.Framer, _ func(string), id uint32, _, _ int) {
			_ = fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		}, false, 2},
		{"every connection goes away before its stream", func(fr *http2.Framer, _ func(string), _ uint32, _, _ int) {
			_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		}, false, 3},
		{"the first connection goes away, the next serves", func(fr *http2.Framer, ok func(string), _ uint32, conn, _ int) {
			if conn == 1 {
				_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
				return
			}
			ok("served")
		}, true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, streams := testnet.ServeH2(t, tc.answer)
			tr := client.New(client.Options{H2C: true})
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
			start := time.Now()
			resp, err := tr.RoundTrip(req)
			took := time.Since(start)
			if tc.served {
				if err != nil {
					t.Fatalf("%v after %v; want the answer of the next connection", err, took)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != "served" {
					t.Fatalf("body %q", body)
				}
			} else {
				var op *net.OpError
				if !errors.Is(err, client.ErrNotProcessed) || !errors.As(err, &op) || op.Op != "dial" {
					t.Fatalf("error %v after %v; want ErrNotProcessed in a dial error", err, took)
				}
			}
			t.Logf("%v after %v, %d streams", err, took, streams.Load())
			if took > 2*time.Second {
				t.Errorf("the request took %v", took)
			}
			if n := streams.Load(); n > tc.streams {
				t.Errorf("the node was sent %d streams, want at most %d", n, tc.streams)
			}
		})
	}
}
