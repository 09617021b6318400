package admin

import (
	"net/http"
)

// serveConfig answers GET /config: the effective configuration as render
// writes it, YAML by default or JSON with ?format=json.
func serveConfig(w http.ResponseWriter, r *http.Request, render func(format string) ([]byte, error)) {
	format := r.URL.Query().Get("format")
	ctype := map[string]string{"": "application/yaml", "yaml": "application/yaml", "json": "application/json"}[format]
	if ctype == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "format=" + format + ": want yaml (the default) or json"})
		return
	}
	if format == "" {
		format = "yaml"
	}
	body, err := render(format)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "rendering the configuration: " + err.Error()})
		return
	}
	w.Header().Set("Content-Type", ctype+"; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
