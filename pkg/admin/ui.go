package admin

import (
	"embed"
	"io/fs"
	"net/http"
)

// uiFiles are the admin UI's page, script and style sheet. They are
// static, hold no data and load nothing from elsewhere: the page calls
// the admin API from the browser, every second.
//
//go:embed ui
var uiFiles embed.FS

// uiHandler serves GET / (the page) and GET /ui/FILE. The content
// security policy allows only the admin's own script, style and API, so
// that nothing a registry's metadata holds can run as script (the other
// security headers are set for every answer, see secured).
func uiHandler() http.Handler {
	sub, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err) // the directory is embedded: cannot happen
	}
	files := http.StripPrefix("/ui/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("Cache-Control", "no-cache")
		if r.URL.Path == "/" {
			http.ServeFileFS(w, r, sub, "index.html")
			return
		}
		files.ServeHTTP(w, r)
	})
}
