package main

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/internal/h1diff"
	"github.com/remora-mesh/remora/pkg/config"
)

// runLimits are h1diff's limits as `remora run` is configured below; its
// idle timeout is the listeners' own.
var runLimits = h1diff.Limits{
	ReadHeaderTimeout:      400 * time.Millisecond,
	IdleTimeout:            2 * time.Minute,
	MaxHeaderBytes:         8 << 10,
	MaxResponseHeaderBytes: 16 << 10,
}

// remoraRun is a Remora started as `remora run` starts it (startApp), with
// the node as the only instance of a static upstream, served on the
// upstream's own listener, without retries (the reference has none).
func remoraRun(lim h1diff.Limits) h1diff.Proxy {
	return func(nodeAddr string) (string, func(), error) {
		yml := staticConfig([]string{nodeAddr}, "    listen: \"127.0.0.1:0\"\n    retry: {max_attempts: 1}\n") +
			fmt.Sprintf("proxy: {read_header_timeout: %v, max_header_bytes: %d, max_response_header_bytes: %d}\n",
				lim.ReadHeaderTimeout, lim.MaxHeaderBytes, lim.MaxResponseHeaderBytes)
		cfg, err := config.Parse([]byte(yml), "")
		if err != nil {
			return "", nil, err
		}
		log := logrus.New()
		log.SetOutput(io.Discard)
		a, err := startApp(context.Background(), cfg, log)
		if err != nil {
			return "", nil, err
		}
		for deadline := time.Now().Add(5 * time.Second); a.Table().Lookup("svc").Snapshot().Available == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				a.close()
				return "", nil, fmt.Errorf("the upstream did not get its node")
			}
		}
		return a.addr("upstream svc"), func() { a.close() }, nil
	}
}

// TestConnectionStateThroughRemoraRun runs every case of h1diff.Cases
// through the listener `remora run` serves (app.go's wiring of
// proxy.Server, net/http and the transport) and through net/http's
// reference: Remora must be no more lenient (see h1diff.Compare).
func TestConnectionStateThroughRemoraRun(t *testing.T) {
	t.Parallel()
	for _, c := range h1diff.Cases(runLimits) {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			h1diff.Check(t, c, runLimits, remoraRun(runLimits))
		})
	}
}
