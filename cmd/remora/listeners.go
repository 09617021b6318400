package main

import (
	"maps"
	"net/http"

	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/proxy"
)

// listenerOptions turns a listener's configuration into the proxy's.
func listenerOptions(l config.Listener) proxy.ListenerOptions {
	return proxy.ListenerOptions{
		Routes:    proxyRules(l.Routes),
		Forwarded: forwardedMode(l.Forwarded),
		RequestID: l.RequestID == nil || *l.RequestID,
	}
}

// dedicatedOptions are the options of an upstream's own http listen port:
// its routes, then the upstream itself; forwarding headers kept and
// request IDs given as on the listeners' defaults.
func dedicatedOptions(u config.Upstream) proxy.ListenerOptions {
	return proxy.ListenerOptions{Upstream: u.Name, Routes: proxyRules(u.Routes), Forwarded: proxy.ForwardedKeep, RequestID: true}
}

func forwardedMode(s string) proxy.Forwarded {
	switch s {
	case config.ForwardedAppend:
		return proxy.ForwardedAppend
	case config.ForwardedDrop:
		return proxy.ForwardedDrop
	}
	return proxy.ForwardedKeep
}

func proxyRules(routes []config.Route) []proxy.Rule {
	out := make([]proxy.Rule, 0, len(routes))
	for _, r := range routes {
		rule := proxy.Rule{
			Name: r.Name, Host: r.Match.Host, Path: r.Match.Path, PathPrefix: r.Match.PathPrefix, PathRegexp: r.Match.PathRegexp,
			Methods: r.Match.Methods, Upstream: r.Upstream, RateLimit: r.RateLimit,
			RequestHeaders: headerRules(r.RequestHeaders), ResponseHeaders: headerRules(r.ResponseHeaders),
		}
		for _, h := range r.Match.Headers {
			rule.Headers = append(rule.Headers, proxy.HeaderCond{Name: h.Name, Value: h.Value, Regexp: h.Regexp, Absent: h.Present != nil && !*h.Present})
		}
		if rw := r.Rewrite; rw != nil {
			rule.StripPrefix, rule.PrefixRewrite, rule.RewritePath = rw.StripPrefix, rw.PrefixRewrite, rw.Path
		}
		out = append(out, rule)
	}
	return out
}

// headerRules turns header rules into the proxy's, with canonical names.
func headerRules(hr *config.HeaderRules) *proxy.HeaderRules {
	if hr == nil {
		return nil
	}
	out := &proxy.HeaderRules{Add: canonical(hr.Add), Set: canonical(hr.Set)}
	for _, k := range hr.Remove {
		out.Remove = append(out.Remove, canonicalKey(k))
	}
	return out
}

func canonical(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range maps.All(m) {
		out[canonicalKey(k)] = v
	}
	return out
}

func canonicalKey(k string) string { return http.CanonicalHeaderKey(k) }
