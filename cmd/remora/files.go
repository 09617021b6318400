package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/regularfile"
	"github.com/remora-mesh/remora/internal/tlsfiles"
	"github.com/remora-mesh/remora/pkg/config"
)

// namedFiles lists the files that options (a registry's parsed options)
// name in fields whose YAML key ends in _file (token_file, password_file,
// secret_key_file, ca_file, cert_file, key_file) or is kubeconfig: the
// secrets and certificates an adapter reads when it opens, and that a
// Secret volume replaces behind an unchanged config file; and the files
// the environment names for it (discovery.EnvFiler).
func namedFiles(options any) []string {
	var out []string
	var walk func(v reflect.Value, depth int)
	walk = func(v reflect.Value, depth int) {
		if depth > 6 {
			return
		}
		for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
			if v.IsNil() {
				return
			}
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			return
		}
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			fv := v.Field(i)
			if fv.Kind() == reflect.String && (strings.HasSuffix(key, "_file") || key == "kubeconfig") {
				if s := fv.String(); s != "" {
					out = append(out, s)
				}
				continue
			}
			walk(fv, depth+1)
		}
	}
	walk(reflect.ValueOf(options), 0)
	if ef, ok := options.(discovery.EnvFiler); ok {
		out = append(out, ef.EnvFiles()...)
	}
	return out
}

// filesDigest sums the names and contents of files (relative to baseDir;
// ~/ is the home directory), or the error that reading one gave: it
// changes when one of them is rewritten, replaced, created or removed.
func filesDigest(baseDir string, files []string) string {
	if len(files) == 0 {
		return ""
	}
	h := sha256.New()
	for _, f := range files {
		if rest, ok := strings.CutPrefix(f, "~/"); ok {
			if home, err := os.UserHomeDir(); err == nil {
				f = filepath.Join(home, rest)
			}
		}
		f = tlsfiles.Resolve(baseDir, f)
		h.Write([]byte(f))
		h.Write([]byte{0})
		data, err := regularfile.ReadFile(f)
		if err != nil {
			h.Write([]byte("error: " + err.Error()))
		} else {
			h.Write(data)
		}
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// registryFiles is the digest of the files a registry's options name.
func registryFiles(cfg *config.Config, rc *config.Registry) string {
	return filesDigest(cfg.Dir, namedFiles(rc.Options))
}

// configFiles is the digest of every file cfg names and reads when it is
// loaded or applied: the admin token_file, the registries' secrets and
// certificates, the upstreams' TLS files. A change to one of them is a
// change to the configuration, as a change to the file itself is.
func configFiles(cfg *config.Config) string {
	var files []string
	if cfg.Admin.TokenFile != "" {
		files = append(files, cfg.Admin.TokenFile)
	}
	for _, rc := range cfg.Registries {
		files = append(files, namedFiles(rc.Options)...)
	}
	for _, u := range cfg.Upstreams {
		files = append(files, namedFiles(u.TLS)...)
	}
	return filesDigest(cfg.Dir, files)
}
