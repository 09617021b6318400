package admin

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// writeUpstreams answers GET /upstreams and /upstreams/NAME: v as JSON, or
// ups as text with ?format=text.
func writeUpstreams(w http.ResponseWriter, r *http.Request, v any, ups []UpstreamStatus) {
	switch f := r.URL.Query().Get("format"); f {
	case "", "json":
		writeJSON(w, http.StatusOK, v)
	case "text":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_ = WriteText(w, ups, time.Now())
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "format=" + f + ": want json or text"})
	}
}

// WriteText writes upstreams for a terminal, in the spirit of Envoy's
// /clusters: a header, then one line per node with its upstream, id,
// address, pool, state, in-flight attempts, requests, failures, latency
// and, while ejected, why and for how long more (as of now). An upstream
// without nodes has one line whose state says why ("no nodes", or that the
// registry has not answered yet). Columns are aligned with spaces; a
// value never contains one, so awk and cut can split the lines.
func WriteText(w io.Writer, ups []UpstreamStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tNODE\tADDRESS\tPOOL\tSTATE\tIN_FLIGHT\tREQUESTS\tFAILURES\tLATENCY_MS\tEJECTED\tREGISTRY")
	for _, u := range ups {
		reg := "synced"
		switch {
		case !u.Synced:
			reg = "waiting"
		case u.Stale:
			reg = "stale"
		}
		if len(u.Nodes) == 0 {
			st := "no_nodes"
			if !u.Synced {
				st = "not_synced"
			}
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\t0\t0\t0\t-\t-\t%s\n", u.Name, st, reg)
			continue
		}
		for _, n := range u.Nodes {
			ej := "-"
			if n.EjectedUntil != nil {
				ej = n.EjectReason + "," + max(n.EjectedUntil.Sub(now), 0).Round(time.Millisecond).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", u.Name, dash(n.ID),
				dash(joinHostPort(n.Address, n.Port)), n.Pool, n.State, n.InFlight, n.Requests, n.Failures,
				strconv.FormatFloat(n.LatencyMs, 'f', 3, 64), ej, reg)
		}
	}
	return tw.Flush()
}

func joinHostPort(host string, port int) string {
	if port == 0 {
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// dash keeps a column non-empty and free of blanks.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return '_'
		}
		return r
	}, s)
}
