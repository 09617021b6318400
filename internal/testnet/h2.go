package testnet

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// H2Answer is how a scripted HTTP/2 node answers a stream id: ok answers
// 200 with body; conn counts the node's connections from 1, stream the
// streams of this one.
type H2Answer func(fr *http2.Framer, ok func(body string), id uint32, conn, stream int)

// ServeH2 serves HTTP/2 without TLS (prior knowledge) on loopback until
// the test ends, answering each stream as answer says, and counts the
// streams it was sent. Its frames are written by hand, so that it can
// refuse streams or go away as a real server seldom does.
func ServeH2(t testing.TB, answer H2Answer) (addr string, streams *atomic.Int64) {
	t.Helper()
	streams = new(atomic.Int64)
	var conns atomic.Int64
	ln := Serve(t, func(c net.Conn) {
		conn := int(conns.Add(1))
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil {
			return
		}
		fr := http2.NewFramer(c, c)
		_ = fr.WriteSettings()
		var hbuf bytes.Buffer
		enc := hpack.NewEncoder(&hbuf)
		n := 0
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = fr.WriteSettingsAck()
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					_ = fr.WritePing(true, f.Data)
				}
			case *http2.HeadersFrame:
				n++
				streams.Add(1)
				id := f.StreamID
				answer(fr, func(body string) {
					hbuf.Reset()
					_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
					_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true})
					_ = fr.WriteData(id, true, []byte(body))
				}, id, conn, n)
			}
		}
	})
	return ln.Addr().String(), streams
}
