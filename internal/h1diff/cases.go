package h1diff

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Raw request builders: every request names itself by its target, and
// goes to Host svc.
func get(path string) string  { return "GET " + path + " HTTP/1.1\r\nHost: svc\r\n\r\n" }
func head(path string) string { return "HEAD " + path + " HTTP/1.1\r\nHost: svc\r\n\r\n" }
func post(path, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
}
func withHeader(method, path, lines, body string) string {
	return method + " " + path + " HTTP/1.1\r\nHost: svc\r\n" + lines + "\r\n" + body
}

// send is one step; then is one after a pause long enough for the last
// answer, and anything a node sends after it, to arrive.
func send(s string) Step          { return Step{Send: s} }
func then(s string) Step          { return Step{Pause: 120 * time.Millisecond, Send: s} }
func conns(cs ...[]Step) [][]Step { return cs }
func halfClose(s string) Step     { return Step{Send: s, CloseWrite: true} }

// upgrade is a WebSocket upgrade request; switched, a node's switch to it.
func upgrade(path string) string {
	return withHeader("GET", path, "Connection: Upgrade\r\nUpgrade: websocket\r\n", "")
}

const switched = "HTTP/1.1 101 Switching Protocols\r\nX-Req: /1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"

func steps(s ...Step) []Step { return s }

// answerFor answers the requests whose target has a key with its answer,
// and the rest with OK.
func answerFor(m map[string]func(r *Request) string) Answer {
	return func(r *Request) string {
		if f, ok := m[r.Target]; ok {
			return f(r)
		}
		return OK(r)
	}
}

func raw(s string) func(*Request) string { return func(*Request) string { return s } }

// evil is an answer a node sends that no request asked for.
const evil = "HTTP/1.1 200 OK\r\nX-Req: /evil\r\nContent-Length: 5\r\n\r\n/evil"

// overLimitBy is a header line that makes a request head (a GET of a
// short path) n bytes longer than net/http's limit for lim: its
// MaxHeaderBytes and 4 KiB for the request line.
func overLimitBy(lim Limits, n int) string {
	size := lim.MaxHeaderBytes + 4096 + n - len(withHeader("GET", "/2", "X-Pad: \r\n", ""))
	return "X-Pad: " + strings.Repeat("p", size) + "\r\n"
}

// Cases are the differential cases, for lim: the class each stands for is
// in its name.
func Cases(lim Limits) []Case {
	big := strings.Repeat("b", 100<<10)
	longHeader := "X-Long: " + strings.Repeat("h", 20<<10) + "\r\n"
	justOverLimit := "X-Pad: " + strings.Repeat("p", lim.MaxHeaderBytes+1500) + "\r\n"
	slow := Wait{Quiet: 1500 * time.Millisecond, Max: 2 * time.Second}
	cases := []Case{
		// Node side: an answer followed by bytes no request asked for
		// must not answer the next request, on this client or another.
		{Name: "node/HEAD answered with a body, next client", Conns: conns(steps(send(head("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": func(r *Request) string { return OK(r) }})},
		{Name: "node/HEAD answered with a body, same client", Conns: conns(steps(send(head("/1")), then(get("/2")), then(get("/3"))))},
		{Name: "node/HEAD answered with a body and a second answer", Conns: conns(steps(send(head("/1"))), steps(send(get("/2"))), steps(send(get("/3")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": func(r *Request) string { return OK(r) + evil }})},
		{Name: "node/204 with a body", Conns: conns(steps(send(get("/1"))), steps(send(get("/2"))), steps(send(get("/3")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 204 No Content\r\nX-Req: /1\r\n\r\n" + evil)})},
		{Name: "node/204 with a length and a body", Conns: conns(steps(send(get("/1")), then(get("/2")), then(get("/3")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 204 No Content\r\nX-Req: /1\r\nContent-Length: 5\r\n\r\n/evil")})},
		{Name: "node/304 with a body", Conns: conns(steps(send(get("/1"))), steps(send(get("/2"))), steps(send(get("/3")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 304 Not Modified\r\nX-Req: /1\r\nContent-Length: 70\r\n\r\n" + evil)})},
		{Name: "node/body longer than its length", Conns: conns(steps(send(get("/1"))), steps(send(get("/2"))), steps(send(get("/3")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": func(r *Request) string { return OK(r) + evil }})},
		{Name: "node/body longer than its length, same client", Conns: conns(steps(send(get("/1")), then(get("/2")), then(get("/3")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": func(r *Request) string { return OK(r) + "xyz" }})},
		{Name: "node/unsolicited answer while idle", Conns: conns(steps(send(get("/1"))), steps(then(get("/2"))), steps(send(get("/3")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": func(r *Request) string { return OK(r) + Pause + evil }})},
		{Name: "node/unsolicited bytes while idle", Conns: conns(steps(send(get("/1")), then(get("/2")), then(get("/3")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": func(r *Request) string { return OK(r) + Pause + "garbage" }})},
		{Name: "node/empty chunked answer", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")})},
		{Name: "node/empty chunked 205", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 205 Reset Content\r\nX-Req: /1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")})},
		{Name: "node/empty answer until close", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nConnection: close\r\n\r\n")})},
		{Name: "node/chunked answer failing at once", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nTransfer-Encoding: chunked\r\n\r\n2;" + strings.Repeat("e", 5000) + "\r\n/1\r\n0\r\n\r\n")})},
		{Name: "node/chunked answer with a bad first size", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n/1\r\n0\r\n\r\n")})},
		{Name: "node/empty chunked answer to HEAD", Conns: conns(steps(send(head("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nTransfer-Encoding: chunked\r\n\r\n")})},
		{Name: "node/chunked answer with bytes after its end", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n/1\r\n0\r\n\r\n" + evil)})},
		{Name: "node/Connection close then more bytes", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": func(r *Request) string { return Status(r, 200, "Connection: close\r\n") + evil }})},
		{Name: "node/1xx then final then leftover", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": func(r *Request) string {
				return "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK(r) + evil
			}})},
		{Name: "node/reads a GET's body as a request (client smuggles through it)", IgnoreGETBody: true,
			Conns: conns(steps(send(withHeader("GET", "/1", fmt.Sprintf("Content-Length: %d\r\n", len(get("/evil"))), get("/evil")))), steps(then(get("/2"))), steps(send(get("/3"))))},
		{Name: "node/reads a GET's body as a request, same client", IgnoreGETBody: true,
			Conns: conns(steps(send(withHeader("GET", "/1", fmt.Sprintf("Content-Length: %d\r\n", len(get("/evil"))), get("/evil"))), then(get("/2")), then(get("/3"))))},
		{Name: "node/two lengths", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n/1x")})},
		{Name: "node/length and chunked", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n/1\r\n0\r\n\r\n")})},
		{Name: "node/signed length", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nContent-Length: +2\r\n\r\n/1")})},
		{Name: "node/head larger than the limit", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": func(r *Request) string { return Status(r, 200, longHeader) }})},
		{Name: "node/bare LF head", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\nX-Req: /1\nContent-Length: 2\n\n/1")})},
		{Name: "node/closes inside the body", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nContent-Length: 10\r\n\r\n/1" + Close)})},
		{Name: "node/closes without an answer", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw(Close)})},
		// A pooled connection that the node closes after reading the next
		// request: net/http's Transport sends it once more on a new
		// connection only when it has no body and its method is GET, HEAD,
		// OPTIONS or TRACE or it carries an idempotency key.
		{Name: "node/closes a reused connection after reading a GET", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/2": raw(Close)})},
		{Name: "node/closes a reused connection after reading a PUT", Conns: conns(steps(send(get("/1")), then(withHeader("PUT", "/2", "Content-Length: 0\r\n", "")))),
			Answer: answerFor(map[string]func(*Request) string{"/2": raw(Close)})},
		{Name: "node/closes a reused connection after reading a DELETE", Conns: conns(steps(send(get("/1")), then(withHeader("DELETE", "/2", "", "")))),
			Answer: answerFor(map[string]func(*Request) string{"/2": raw(Close)})},
		{Name: "node/closes a reused connection after reading a POST", Conns: conns(steps(send(get("/1")), then(post("/2", "abc")))),
			Answer: answerFor(map[string]func(*Request) string{"/2": raw(Close)})},
		{Name: "node/closes a reused connection after reading a GET with a body", Conns: conns(steps(send(get("/1")), then(withHeader("GET", "/2", "Content-Length: 3\r\n", "abc")))),
			Answer: answerFor(map[string]func(*Request) string{"/2": raw(Close)})},
		{Name: "node/closes a reused connection after reading a keyed POST", Conns: conns(steps(send(get("/1")), then(withHeader("POST", "/2", "Idempotency-Key: k\r\nContent-Length: 0\r\n", "")))),
			Answer: answerFor(map[string]func(*Request) string{"/2": raw(Close)})},
		{Name: "node/closes a reused connection after reading a keyed POST with a body", Conns: conns(steps(send(get("/1")), then(withHeader("POST", "/2", "Idempotency-Key: k\r\nContent-Length: 3\r\n", "abc")))),
			Answer: answerFor(map[string]func(*Request) string{"/2": raw(Close)})},
		{Name: "node/answers with a close-delimited body", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\n\r\n/1 until close" + Close)})},
		{Name: "node/HTTP/1.0 answer", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.0 200 OK\r\nX-Req: /1\r\nContent-Length: 2\r\n\r\n/1")})},
		{Name: "node/101 to a plain request", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 101 Switching Protocols\r\nX-Req: /1\r\n\r\n" + evil)})},
		{Name: "node/slow body after the head", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nContent-Length: 2\r\n\r\n/" + Pause + "1")})},
		{Name: "node/answer before the request body", Conns: conns(steps(send(withHeader("POST", "/1", "Content-Length: 10\r\n", "01234")), then("56789"), then(get("/2"))))},
		{Name: "node/204 with Content-Length 0", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 204 No Content\r\nX-Req: /1\r\nContent-Length: 0\r\n\r\n")})},
		{Name: "node/304 with Content-Length and type", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 304 Not Modified\r\nX-Req: /1\r\nContent-Length: 10\r\nContent-Type: text/plain\r\n\r\n")})},
		{Name: "node/Connection lists Content-Length", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nConnection: keep-alive, Content-Length\r\nContent-Length: 2\r\n\r\n/1")})},
		{Name: "node/Connection lists Content-Length, long body", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nConnection: Content-Length\r\nContent-Length: 3000\r\n\r\n" + strings.Repeat("l", 3000))})},
		{Name: "node/Connection lists Content-Type", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nConnection: content-type\r\nContent-Type: text/x\r\nContent-Length: 2\r\n\r\n/1")})},
		{Name: "node/Connection lists Content-Encoding", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nConnection: Content-Encoding\r\nContent-Encoding: gzip\r\nContent-Length: 6\r\n\r\n<html>")})},
		{Name: "node/encoded body is not sniffed", Conns: conns(steps(send(get("/1")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nContent-Encoding: gzip\r\nContent-Length: 6\r\n\r\n<html>")})},
		{Name: "node/corrupt chunked body", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n/1\r\nzz\r\n" + evil)})},
		{Name: "node/chunked with trailers", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n/1\r\n0\r\nX-T: done\r\n\r\n")})},
		{Name: "node/two 1xx then final", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": func(r *Request) string {
				return "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK(r)
			}})},
		{Name: "node/1xx with framing headers", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": func(r *Request) string {
				return "HTTP/1.1 103 Early Hints\r\nX-Req: /1\r\nLink: </a>\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + OK(r)
			}})},
		{Name: "node/100 Continue to a GET", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": func(r *Request) string { return "HTTP/1.1 100 Continue\r\n\r\n" + OK(r) }})},
		{Name: "node/status without a reason", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200\r\nX-Req: /1\r\nContent-Length: 2\r\n\r\n/1")})},
		{Name: "node/four-digit status", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 2000 OK\r\nX-Req: /1\r\nContent-Length: 2\r\n\r\n/1")})},
		{Name: "node/lowercase version", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("http/1.1 200 OK\r\nX-Req: /1\r\nContent-Length: 2\r\n\r\n/1")})},
		{Name: "node/folded header", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\n/1")})},
		{Name: "node/space before a colon", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nContent-Length : 5\r\n\r\n/1")})},
		{Name: "node/NUL in a header", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\n/1")})},
		{Name: "node/length with leading zeros", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nContent-Length: 0002\r\n\r\n/1")})},
		{Name: "node/empty length", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nContent-Length: \r\n\r\n/1")})},
		{Name: "node/length and identity", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\n/1")})},
		{Name: "node/length far beyond the body, then close", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nContent-Length: 1000000\r\n\r\n/1" + Close)})},
		{Name: "node/HTTP/1.0 keep-alive answer", Conns: conns(steps(send(get("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.0 200 OK\r\nX-Req: /1\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n/1")})},
		{Name: "node/long body then leftover", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nContent-Length: " + fmt.Sprint(len(big)) + "\r\n\r\n" + big + evil)})},
		{Name: "node/HEAD answered with a chunked end", Conns: conns(steps(send(head("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")})},
		{Name: "node/HEAD answered as it should be", Conns: conns(steps(send(head("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 200 OK\r\nX-Req: /1\r\nContent-Length: 100\r\n\r\n")})},
		{Name: "node/304 chunked with a body", Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 304 Not Modified\r\nX-Req: /1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n/1\r\n0\r\n\r\n")})},
		{Name: "node/answers a POST, then its body is read as a request", IgnoreGETBody: true,
			Conns: conns(steps(send(withHeader("GET", "/1", "Content-Length: 1\r\n", "x")), then(get("/2"))))},

		// Client side: what remains of a broken request must never be
		// read as the next request.
		{Name: "client/corrupt chunk size then a request", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: chunked\r\n", "zz\r\n"+get("/evil")))))},
		{Name: "client/chunk without its CRLF", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: chunked\r\n", "3\r\nabc"+get("/evil")))))},
		{Name: "client/chunk size overflow", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: chunked\r\n", "ffffffffffffffffff1\r\nab\r\n0\r\n\r\n"+get("/evil")))))},
		{Name: "client/chunk size with a sign", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: chunked\r\n", "+2\r\nab\r\n0\r\n\r\n"+get("/evil")))))},
		{Name: "client/chunked with a length", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", "2\r\nab\r\n0\r\n\r\n"+get("/2")))))},
		{Name: "client/chunked body, next request pipelined", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: chunked\r\n", "2\r\nab\r\n3;ext=1\r\ncde\r\n0\r\nX-T: 1\r\n\r\n"+get("/2")))))},
		{Name: "client/chunked, uppercase and leading zeros", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: chunked\r\n", "00A\r\n0123456789\r\n0\r\n\r\n"+get("/2")))))},
		{Name: "client/chunked ends early", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: chunked\r\n", "5\r\nab"))))},
		{Name: "client/two differing lengths", Conns: conns(steps(send(withHeader("POST", "/1", "Content-Length: 3\r\nContent-Length: 4\r\n", "abcd"+get("/2")))))},
		{Name: "client/two equal lengths", Conns: conns(steps(send(withHeader("POST", "/1", "Content-Length: 3\r\nContent-Length: 3\r\n", "abc"+get("/2")))))},
		{Name: "client/list of lengths", Conns: conns(steps(send(withHeader("POST", "/1", "Content-Length: 3, 3\r\n", "abc"+get("/2")))))},
		{Name: "client/signed length", Conns: conns(steps(send(withHeader("POST", "/1", "Content-Length: +3\r\n", "abc"+get("/2")))))},
		{Name: "client/negative length", Conns: conns(steps(send(withHeader("POST", "/1", "Content-Length: -1\r\n", get("/2")))))},
		{Name: "client/length with spaces inside", Conns: conns(steps(send(withHeader("POST", "/1", "Content-Length: 1 0\r\n", "abcdefghij"+get("/2")))))},
		{Name: "client/hex length", Conns: conns(steps(send(withHeader("POST", "/1", "Content-Length: 0x3\r\n", "abc"+get("/2")))))},
		{Name: "client/huge length", Conns: conns(steps(send(withHeader("POST", "/1", "Content-Length: 99999999999999999999\r\n", "abc"+get("/2")))))},
		{Name: "client/body shorter than its length, then silence", Conns: conns(steps(send(withHeader("POST", "/1", "Content-Length: 10\r\n", "abc")))), Wait: slow},
		{Name: "client/transfer-encoding identity", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: identity\r\nContent-Length: 3\r\n", "abc"+get("/2")))))},
		{Name: "client/transfer-encoding gzip", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: gzip\r\n", "abc"+get("/2")))))},
		{Name: "client/transfer-encoding gzip, chunked", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: gzip, chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"+get("/2")))))},
		{Name: "client/transfer-encoding chunked twice", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"+get("/2")))))},
		{Name: "client/transfer-encoding xchunked", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: xchunked\r\n", "3\r\nabc\r\n0\r\n\r\n"+get("/2")))))},
		{Name: "client/transfer-encoding with a space before the colon", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding : chunked\r\nContent-Length: 3\r\n", "abc"+get("/2")))))},
		{Name: "client/folded transfer-encoding", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding:\r\n chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"+get("/2")))))},
		{Name: "client/HTTP/1.0 with chunked", Conns: conns(steps(send("POST /1 HTTP/1.0\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + get("/2"))))},
		{Name: "client/GET with a body, pipelined", Conns: conns(steps(send(withHeader("GET", "/1", "Content-Length: 5\r\n", "hello"+get("/2")+get("/3")))))},
		{Name: "client/pipelined GETs", Conns: conns(steps(send(get("/1") + get("/2") + get("/3"))))},
		{Name: "client/pipelined HEAD and GET", Conns: conns(steps(send(head("/1") + get("/2") + head("/3"))))},
		{Name: "client/pipelined POSTs", Conns: conns(steps(send(post("/1", "a") + post("/2", "bb") + get("/3"))))},
		{Name: "client/pipelined after Connection close", Conns: conns(steps(send(withHeader("GET", "/1", "Connection: close\r\n", "") + get("/2"))))},
		{Name: "client/HTTP/1.0 without keep-alive, pipelined", Conns: conns(steps(send("GET /1 HTTP/1.0\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/HTTP/1.0 keep-alive", Conns: conns(steps(send("GET /1 HTTP/1.0\r\nHost: svc\r\nConnection: keep-alive\r\n\r\n"), then(get("/2"))))},
		{Name: "client/empty lines before a request", Conns: conns(steps(send("\r\n\r\n" + get("/1"))))},
		{Name: "client/CRLF after a POST body", Conns: conns(steps(send(post("/1", "abc") + "\r\n" + post("/2", "de") + "\n" + get("/3"))))},
		{Name: "client/CRLF after a chunked POST", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\n\r\n\r\n\r\n"+get("/2")))))},
		{Name: "client/CRLF after a POST, sent later", Conns: conns(steps(send(post("/1", "abc")), then("\r\n"+get("/2"))))},
		{Name: "client/three CRLF after a POST", Conns: conns(steps(send(post("/1", "abc") + "\r\n\r\n\r\n" + get("/2"))))},
		{Name: "client/CRLF after a GET", Conns: conns(steps(send(get("/1") + "\r\n" + get("/2"))))},
		{Name: "client/bare LF head", Conns: conns(steps(send("GET /1 HTTP/1.1\nHost: svc\n\n" + get("/2"))))},
		{Name: "client/bare CR in a header", Conns: conns(steps(send("GET /1 HTTP/1.1\r\nHost: svc\r\nX-A: a\rb\r\n\r\n" + get("/2"))))},
		{Name: "client/NUL in a header", Conns: conns(steps(send("GET /1 HTTP/1.1\r\nHost: svc\r\nX-A: a\x00b\r\n\r\n" + get("/2"))))},
		{Name: "client/folded header", Conns: conns(steps(send("GET /1 HTTP/1.1\r\nHost: svc\r\nX-A: a\r\n b\r\n\r\n" + get("/2"))))},
		{Name: "client/space before a colon", Conns: conns(steps(send("GET /1 HTTP/1.1\r\nHost: svc\r\nX-A : a\r\n\r\n" + get("/2"))))},
		{Name: "client/header without a colon", Conns: conns(steps(send("GET /1 HTTP/1.1\r\nHost: svc\r\nX-A\r\n\r\n" + get("/2"))))},
		{Name: "client/two Host headers", Conns: conns(steps(send("GET /1 HTTP/1.1\r\nHost: svc\r\nHost: other\r\n\r\n" + get("/2"))))},
		{Name: "client/no Host header", Conns: conns(steps(send("GET /1 HTTP/1.1\r\n\r\n" + get("/2"))))},
		{Name: "client/bad Host header", Conns: conns(steps(send("GET /1 HTTP/1.1\r\nHost: s v c\r\n\r\n" + get("/2"))))},
		{Name: "client/lowercase version", Conns: conns(steps(send("GET /1 http/1.1\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/HTTP/1.2", Conns: conns(steps(send("GET /1 HTTP/1.2\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/HTTP/2.0 in a request line", Conns: conns(steps(send("GET /1 HTTP/2.0\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/double space in the request line", Conns: conns(steps(send("GET  /1 HTTP/1.1\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/tab in the request line", Conns: conns(steps(send("GET\t/1 HTTP/1.1\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/absolute form", Conns: conns(steps(send("GET http://svc/1 HTTP/1.1\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/asterisk form", Conns: conns(steps(send("OPTIONS * HTTP/1.1\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/asterisk form of a GET", Conns: conns(steps(send("GET * HTTP/1.1\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/asterisk form of a POST", Conns: conns(steps(send("POST * HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc" + get("/2"))))},
		{Name: "client/absolute form without a path", Conns: conns(steps(send("GET http://svc HTTP/1.1\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/absolute form with an escaped path", Conns: conns(steps(send("GET http://svc/a%2Fb HTTP/1.1\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/fragment in the target", Conns: conns(steps(send("GET /1#frag HTTP/1.1\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/query that cleans to nothing", Conns: conns(steps(send("GET /1?a=%zz HTTP/1.1\r\nHost: svc\r\n\r\n" + "GET /2?a=1;b=2 HTTP/1.1\r\nHost: svc\r\n\r\n" + get("/3"))))},
		{Name: "client/space in the target", Conns: conns(steps(send("GET /1 x HTTP/1.1\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/invalid method", Conns: conns(steps(send("G(T /1 HTTP/1.1\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/Expect 100-continue", Conns: conns(steps(send(withHeader("POST", "/1", "Expect: 100-continue\r\nContent-Length: 3\r\n", "")), then("abc"), then(get("/2"))))},
		{Name: "client/Expect something else", Conns: conns(steps(send(withHeader("POST", "/1", "Expect: fancy\r\nContent-Length: 3\r\n", "abc"+get("/2")))))},
		{Name: "client/Upgrade to websocket", Conns: conns(steps(send(withHeader("GET", "/1", "Connection: Upgrade\r\nUpgrade: websocket\r\n", "")), then(get("/2"))))},
		{Name: "node/switches, then both sides send", Conns: conns(steps(send(upgrade("/1")), then("ping"))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw(switched + "from-node")})},
		{Name: "node/declines an upgrade, then the next request", Conns: conns(steps(send(upgrade("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 426 Upgrade Required\r\nX-Req: /1\r\nContent-Length: 2\r\n\r\n/1")})},
		{Name: "node/switches to another protocol", Conns: conns(steps(send(upgrade("/1")), then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 101 Switching Protocols\r\nX-Req: /1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")})},
		{Name: "node/switches with a body length", Conns: conns(steps(send(upgrade("/1")), then("ping"))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 101 Switching Protocols\r\nX-Req: /1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n\r\nhello")})},
		{Name: "client/upgrade with early data", Conns: conns(steps(send(upgrade("/1") + "early"))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw(switched + "from-node")})},
		{Name: "client/upgrade, pipelined GET, node declines", Conns: conns(steps(send(upgrade("/1") + get("/2"))))},
		{Name: "client/Expect 100-continue, body after a wait", Conns: conns(steps(send("POST /1 HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"), Step{Pause: 200 * time.Millisecond, Send: "hello"}, then(get("/2"))))},
		{Name: "client/Expect 100-continue, node answers 417", Conns: conns(steps(send("POST /1 HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"), Step{Pause: 200 * time.Millisecond, Send: "hello"}, then(get("/2")))),
			Answer: answerFor(map[string]func(*Request) string{"/1": raw("HTTP/1.1 417 Expectation Failed\r\nX-Req: /1\r\nContent-Length: 2\r\n\r\n/1")})},
		{Name: "client/head larger than the limit", Conns: conns(steps(send(withHeader("GET", "/1", longHeader, "") + get("/2"))))},
		{Name: "client/head just over the limit", Conns: conns(steps(send(withHeader("GET", "/1", justOverLimit, "") + get("/2"))))},
		{Name: "client/pipelined head over the limit by less than a buffer", Conns: conns(steps(send(get("/1") + withHeader("GET", "/2", overLimitBy(lim, 1000), "") + get("/3"))))},
		{Name: "client/pipelined head over the limit by more than a buffer", Conns: conns(steps(send(get("/1") + withHeader("GET", "/2", overLimitBy(lim, 5000), "") + get("/3"))))},
		{Name: "client/many headers", Conns: conns(steps(send(withHeader("GET", "/1", strings.Repeat("X-H: v\r\n", 500), "") + get("/2"))))},
		{Name: "client/large body, pipelined", Conns: conns(steps(send(post("/1", big) + get("/2"))))},
		{Name: "client/Connection close with a body", Conns: conns(steps(send(withHeader("POST", "/1", "Connection: close\r\nContent-Length: 3\r\n", "abc") + get("/2"))))},
		{Name: "client/Connection header lists a hop", Conns: conns(steps(send(withHeader("GET", "/1", "Connection: X-Hop\r\nX-Hop: 1\r\nX-Keep: 2\r\n", "") + get("/2"))))},
		{Name: "client/capitalized Chunked with a length", Conns: conns(steps(send(withHeader("POST", "/1", "Content-Length: 4\r\nTransfer-Encoding: Chunked\r\n", "0\r\n\r\n"+get("/evil")))))},
		{Name: "client/chunked then identity", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", "3\r\nabc\r\n0\r\n\r\n"+get("/2")))))},
		{Name: "client/tab before chunked", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding:\tchunked\r\n", "3\r\nabc\r\n0\r\n\r\n"+get("/2")))))},
		{Name: "client/tab in a length", Conns: conns(steps(send(withHeader("POST", "/1", "Content-Length:\t3\r\n", "abc"+get("/2")))))},
		{Name: "client/tab before a colon", Conns: conns(steps(send(withHeader("POST", "/1", "Content-Length\t: 3\r\n", "abc"+get("/2")))))},
		{Name: "client/chunk data ended by LF", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: chunked\r\n", "3\nabc\n0\n\n"+get("/2")))))},
		{Name: "client/last chunk without its CRLF", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\n"+get("/evil")))))},
		{Name: "client/Content-Length in a trailer", Conns: conns(steps(send(withHeader("POST", "/1", "Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\nContent-Length: 50\r\n\r\n"+get("/2")))))},
		{Name: "client/trailing space in the request line", Conns: conns(steps(send("GET /1 HTTP/1.1 \r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/request line longer than the limit", Conns: conns(steps(send("GET /" + strings.Repeat("a", 16<<10) + " HTTP/1.1\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/control character in the target", Conns: conns(steps(send("GET /1\x01 HTTP/1.1\r\nHost: svc\r\n\r\n" + get("/2"))))},
		{Name: "client/empty Host", Conns: conns(steps(send("GET /1 HTTP/1.1\r\nHost: \r\n\r\n" + get("/2"))))},
		{Name: "client/HTTP/1.0 with a body, then more", Conns: conns(steps(send("POST /1 HTTP/1.0\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc" + get("/evil"))))},
		{Name: "client/HTTP/0.9", Conns: conns(steps(send("GET /1\r\n\r\n")))},
		{Name: "client/half-closes inside a POST body", Conns: conns(steps(halfClose(post("/1", "hello")[:len(post("/1", "hello"))-2])))},
		{Name: "client/half-closes inside a head", Conns: conns(steps(halfClose("GET /1 HTTP/1.1\r\nHost: svc\r\n")))},
		{Name: "client/half-closes inside a header line", Conns: conns(steps(halfClose("GET /1 HTTP/1.1\r\nHost: s")))},
		{Name: "client/half-closes inside the request line", Conns: conns(steps(halfClose("GET /1 HT")))},
		{Name: "client/half-closes after the request line", Conns: conns(steps(halfClose("GET /1 HTTP/1.1\r\n")))},
		{Name: "client/half-closes after an empty line", Conns: conns(steps(halfClose("\r\n")))},
		{Name: "client/half-closes at once", Conns: conns(steps(Step{CloseWrite: true}))},
		{Name: "client/half-closes inside a second head", Conns: conns(steps(send(get("/1")), Step{Pause: 120 * time.Millisecond, Send: "GET /2 HTTP/1.1\r\nHo", CloseWrite: true}))},
		{Name: "client/half-closes inside a head after a POST", Conns: conns(steps(send(post("/1", "hello")), Step{Pause: 120 * time.Millisecond, Send: "\r\nGET /2 HTTP/1.1\r\n", CloseWrite: true}))},
		{Name: "client/half-closes after a GET, later", Conns: conns(steps(send(get("/1")), Step{Pause: 120 * time.Millisecond, CloseWrite: true}))},
		{Name: "client/request ends in the middle, client stays", Conns: conns(steps(send(get("/1") + "GET /2 HTTP/1.1\r\nHost: svc\r\n"))), Wait: slow},
		{Name: "client/body of a GET sent slowly", Conns: conns(steps(send(withHeader("GET", "/1", "Content-Length: 6\r\n", "abc")), then("def"), then(get("/2"))))},

		// Slow clients are bounded by read_header_timeout.
		{Name: "slow/connects and sends nothing", Conns: conns(steps()), Wait: slow},
		{Name: "slow/stops inside the request line", Conns: conns(steps(send("GET /1 HT"))), Wait: slow},
		{Name: "slow/stops inside a header", Conns: conns(steps(send("GET /1 HTTP/1.1\r\nHost: s"))), Wait: slow},
		{Name: "slow/stops before the empty line", Conns: conns(steps(send("GET /1 HTTP/1.1\r\nHost: svc\r\n"))), Wait: slow},
		{Name: "slow/trickles a head within the timeout", Conns: conns(steps(send("GET /1 HTTP/1.1\r\n"), then("Host: svc\r\n"), then("\r\n")))},
		{Name: "slow/second request stops inside its head", Conns: conns(steps(send(get("/1")), then("GET /2 HTTP/1.1\r\nHo"))), Wait: slow},
		{Name: "slow/second request after the idle wait starts", Conns: conns(steps(send(get("/1")), Step{Pause: 600 * time.Millisecond, Send: get("/2")}))},
	}
	// A node that closes inside a body of known length: the client gets
	// the head and the body as far as net/http passes them on before it
	// aborts the answer (all but what its ResponseWriter's buffer held),
	// on the direct path (a short body, a long one) and through
	// ReverseProxy (an HTTP/1.0 answer).
	for _, n := range []int{1500, 3000, 5000, 40000, 100000} {
		body := strings.Repeat("c", n)
		cases = append(cases,
			Case{Name: fmt.Sprintf("node/closes after %d bytes of the body", n), Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
				Answer: answerFor(map[string]func(*Request) string{"/1": raw(fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Req: /1\r\nContent-Length: %d\r\n\r\n%s", n+10, body) + Close)})},
			Case{Name: fmt.Sprintf("node/HTTP/1.0 answer closes after %d bytes of the body", n), Conns: conns(steps(send(get("/1"))), steps(send(get("/2")))),
				Answer: answerFor(map[string]func(*Request) string{"/1": raw(fmt.Sprintf("HTTP/1.0 200 OK\r\nX-Req: /1\r\nContent-Length: %d\r\n\r\n%s", n+10, body) + Close)})},
		)
	}
	// A request after the first: net/http's server waits for its first
	// 4 bytes (under the idle timeout) before the head's limit and
	// timeout start. What that wait read is not counted: a request sent
	// after its answer may be longer than the first by a buffer's read.
	// A client that stops or half-closes with fewer than 4 bytes sent is
	// still idle: held for the idle timeout, closed without an answer.
	for _, n := range []int{-1, 0, 1, 1000, 5000} {
		over := overLimitBy(lim, n)
		cases = append(cases,
			Case{Name: fmt.Sprintf("client/request sent later, head over the limit by %d", n),
				Conns: conns(steps(send(get("/1")), then(withHeader("GET", "/2", over, "")+get("/3"))))},
			Case{Name: fmt.Sprintf("client/request sent later, request line over the limit by %d", n),
				Conns: conns(steps(send(get("/1")), then("GET /2"+strings.Repeat("l", len(over))+" HTTP/1.1\r\nHost: svc\r\n\r\n"+get("/3"))))},
		)
	}
	for k := 1; k <= 4; k++ {
		cases = append(cases,
			Case{Name: fmt.Sprintf("client/half-closes after %d bytes of a second request", k),
				Conns: conns(steps(send(get("/1")), Step{Pause: 120 * time.Millisecond, Send: get("/2")[:k], CloseWrite: true}))},
			Case{Name: fmt.Sprintf("slow/second request stops after %d bytes", k),
				Conns: conns(steps(send(get("/1")), then(get("/2")[:k]))), Wait: Wait{Quiet: time.Second, Max: time.Second}},
		)
	}
	// A node that stops inside a body of known length and stays: the
	// client gets what net/http has passed on by then (what left its
	// ResponseWriter's and its connection's buffers), on the direct path
	// too, whose body is read whole before it is written when it comes
	// whole. In one write after the head, or in two.
	for _, n := range []int{4000, 5000, 9000, 20000, 40000} {
		body := strings.Repeat("s", n)
		head := fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Req: /1\r\nContent-Length: %d\r\n\r\n", n+10)
		cases = append(cases,
			Case{Name: fmt.Sprintf("node/stops after %d bytes of the body", n), Conns: conns(steps(send(get("/1")))),
				Answer: answerFor(map[string]func(*Request) string{"/1": raw(head + body)})},
			Case{Name: fmt.Sprintf("node/stops after %d bytes of the body, sent in two", n), Conns: conns(steps(send(get("/1")))),
				Answer: answerFor(map[string]func(*Request) string{"/1": raw(head + body[:n/2] + Pause + body[n/2:])})},
		)
	}
	return cases
}

// FuzzAnswers are the ways a node answers in a fuzzed case (see Fuzz).
var FuzzAnswers = []Answer{
	OK,
	func(r *Request) string { return OK(r) + evil },              // an answer no request asked for
	func(r *Request) string { return OK(r) + Pause + evil },      // the same, while idle
	func(r *Request) string { return Status(r, 204, "") + "xx" }, // a 204 with a body
	func(r *Request) string { return Status(r, 200, "Connection: close\r\n") + Close },
	func(r *Request) string {
		return "HTTP/1.1 200 OK\r\nX-Req: " + r.ID() + "\r\n\r\n" + r.ID() + Close
	},
	func(r *Request) string {
		return "HTTP/1.1 200 OK\r\nX-Req: " + r.ID() + "\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
	},
	func(*Request) string { return Close },
}

// Check runs c through the reference and through remora, both with lim,
// and fails t where remora differs (Compare, with no leeway).
func Check(t *testing.T, c Case, lim Limits, remora Proxy) {
	t.Helper()
	got, err := Run(c, remora)
	if err != nil {
		t.Fatal(err)
	}
	ref, diffs, err := CompareWithReference(c, lim, got, Rules{})
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Errorf("Remora differs from net/http:\n  %s", strings.Join(diffs, "\n  "))
		for i := range got.Clients {
			t.Logf("conn %d: reference %q\n          Remora    %q", i+1, ref.Clients[i].Raw, got.Clients[i].Raw)
		}
		t.Logf("node: reference %v\n      Remora    %v", ref.Node, got.Node)
	}
}

// ReferenceRuns is how many times CompareWithReference runs the
// reference before a difference counts.
const ReferenceRuns = 3

// CompareWithReference runs c through the reference (with lim) and
// compares got with its outcome; where they differ, it runs the reference
// again, up to ReferenceRuns times in all, and reports no difference if
// any run matches got. It returns the first run and its differences.
//
// The reference's outcome is a set, not one value: net/http's Transport
// races with a node's unsolicited bytes. Its idle connection's readLoop
// closes the connection when they arrive; a request that took that
// connection a moment before gets a 502 (a POST is not retried), and one
// that came a moment later gets a fresh connection and its answer. got
// must be one of the outcomes the reference can give; a difference that
// every run shows is Remora's.
func CompareWithReference(c Case, lim Limits, got Result, rules Rules) (Result, []string, error) {
	var first Result
	var firstDiffs []string
	for i := range ReferenceRuns {
		ref, err := Run(c, Reference(lim))
		if err != nil {
			return Result{}, nil, err
		}
		diffs := Compare(ref, got, rules)
		if len(diffs) == 0 {
			return ref, nil, nil
		}
		if i == 0 {
			first, firstDiffs = ref, diffs
		}
	}
	return first, firstDiffs, nil
}

// Seed adds the cases of Cases(lim) that are one client connection
// answered by a plain node to f, as Fuzz's arguments.
func Seed(f *testing.F, lim Limits) {
	for _, c := range Cases(lim) {
		if len(c.Conns) != 1 || len(c.Conns[0]) == 0 || c.Wait != (Wait{}) || c.Answer != nil || c.IgnoreGETBody {
			continue
		}
		var data strings.Builder
		for _, s := range c.Conns[0] {
			data.WriteString(s.Send)
		}
		f.Add([]byte(data.String()), uint16(len(c.Conns[0][0].Send)), uint8(0))
	}
	for i := range FuzzAnswers {
		f.Add([]byte(get("/1")+head("/2")+post("/3", "abc")), uint16(10), uint8(i))
	}
}

// Fuzz sends data, in two writes split at split, through the reference
// and through remora, to a node that answers in FuzzAnswers[mode]'s way,
// then a plain GET on a second connection (which a node connection left
// unclean would answer wrongly). Remora must keep Compare's safety rules:
// no answer to another request, no request the reference's node did not
// get, no connection left open that the reference closed. It may be
// stricter, and its answers may differ in their headers.
func Fuzz(t *testing.T, lim Limits, remora Proxy, data []byte, split uint16, mode uint8) {
	lower := strings.ToLower(string(data))
	if len(data) == 0 || len(data) > 8<<10 || strings.Contains(lower, "h2c") || strings.Contains(lower, "pri ") {
		return // h2c is Remora's own; the reference has none
	}
	k := int(split) % (len(data) + 1)
	first := steps(send(string(data[:k])), Step{Pause: 30 * time.Millisecond, Send: string(data[k:])})
	c := Case{
		Conns:  conns(first, steps(send(get("/next")))),
		Answer: FuzzAnswers[int(mode)%len(FuzzAnswers)],
		Wait:   Wait{Quiet: 300 * time.Millisecond, Max: time.Second, Answered: true, Settle: 30 * time.Millisecond},
	}
	got, err := Run(c, remora)
	if err != nil {
		t.Fatal(err)
	}
	ref, diffs, err := CompareWithReference(c, lim, got, Rules{AllowStricter: true, IgnoreAnswers: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Errorf("Remora is more lenient than net/http for %q (split %d, answer %d):\n  %s", data, k, int(mode)%len(FuzzAnswers), strings.Join(diffs, "\n  "))
		for i := range got.Clients {
			t.Logf("conn %d: reference %q\n          Remora    %q", i+1, ref.Clients[i].Raw, got.Clients[i].Raw)
		}
	}
}
