package main

import (
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// rate_limit: 100 requests per second with a burst of 10. 1,000 requests
// paced evenly over a second: the burst and the rate pass (about 110), the
// rest get 429 with Retry-After, and the upstream counts them as 4xx.
func TestRateLimit(t *testing.T) {
	b := startBackend(t, "b1")
	a := startRemora(t, staticConfig([]string{b.srv.Listener.Addr().String()}, "    rate_limit: {requests_per_second: 100, burst: 10}\n"))
	eventually(t, 5*time.Second, "ready", func() bool { return a.Table().Lookup("svc").Snapshot().Available == 1 })
	url := "http://" + a.addr("outbound") + "/"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()
	var (
		mu                  sync.Mutex
		passed, limited     int
		badRetryAfter, errs int
		wg                  sync.WaitGroup
	)
	const total = 1000
	start := time.Now()
	tick := time.NewTicker(time.Second / total)
	defer tick.Stop()
	for range total {
		<-tick.C
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Host = "svc"
			resp, err := client.Do(req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs++
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case 200:
				passed++
			case http.StatusTooManyRequests:
				limited++
				if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
					badRetryAfter++
				}
			default:
				errs++
			}
		})
	}
	elapsed := time.Since(start)
	wg.Wait()
	want := 10 + int(100*elapsed.Seconds()) // the burst, and the rate over the time the requests took
	if passed < want-10 || passed > want+10 || passed+limited != total || errs > 0 || badRetryAfter > 0 {
		t.Fatalf("%d passed, %d limited, %d errors, %d bad Retry-After over %v; want about %d passed and the rest limited",
			passed, limited, errs, badRetryAfter, elapsed, want)
	}
	if got := a.Table().Lookup("svc").Metrics().Requests[0][4].Load(); got != uint64(limited) {
		t.Fatalf("4xx counted %d; want %d", got, limited)
	}
}
