package nacos

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
)

// Every file the block names is read at validation (Check), so that
// `remora validate` refuses what would stop `remora run`; each error is
// placed at its field and never shows a secret. cache_dir must be a
// directory, or a path where one can be made.
func TestCheckRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	const pw, sk = "c41f-secret-password", "77aa-secret-key"
	for name, content := range map[string]string{"pw": pw + "\n", "sk": sk + "\n", "empty": "\n", "file": "x"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing")
	const user, ak = "username: u\n", "access_key: a\n"
	for _, tc := range []struct {
		block string
		want  [][2]string // field, text
	}{
		{"", nil},
		{user + "password_file: pw\n" + ak + "secret_key_file: sk", nil},
		{"cache_dir: cache/nacos", nil}, // made by Open
		{"cache_dir: " + dir, nil},
		{user + "password_file: missing", [][2]string{{"password_file", "open " + missing + ": no such file or directory"}}},
		{user + "password_file: empty", [][2]string{{"password_file", "is empty"}}},
		{ak + "secret_key_file: missing", [][2]string{{"secret_key_file", "open " + missing}}},
		{user + "password_file: missing\n" + ak + "secret_key_file: empty", [][2]string{{"password_file", "open"}, {"secret_key_file", "is empty"}}},
		{"cache_dir: file", [][2]string{{"cache_dir", filepath.Join(dir, "file") + " is not a directory"}}},
		{"cache_dir: file/sub/dir", [][2]string{{"cache_dir", filepath.Join(dir, "file") + " is not a directory"}}},
		{user + "password_file: pw\n" + ak + "secret_key_file: missing\ncache_dir: file", [][2]string{{"secret_key_file", "open"}, {"cache_dir", "not a directory"}}},
	} {
		o, err := parseYAML(t, tc.block)
		if err != nil {
			t.Fatalf("%q: %v", tc.block, err)
		}
		var c discovery.Checker = o
		err = c.Check(dir)
		discoverytest.WantFieldErrors(t, tc.block, err, tc.want)
		if err != nil && (strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), sk)) {
			t.Errorf("%q: a secret is in the error: %v", tc.block, err)
		}
	}
}

// A cache directory that cannot be created when the registry opens (a
// read-only file system, or a file in the way since validation) does not
// stop Remora: Open warns and uses a temporary directory, removed on Close.
func TestOpenWithUnusableCacheDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		o     Options
		env   discovery.Env
		field string
	}{
		{"cache_dir", Options{CacheDir: filepath.Join(file, "sub")}, discovery.Env{Name: "n"}, "cache_dir"},
		{"data_dir", Options{}, discovery.Env{Name: "n", DataDir: file}, "data_dir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Servers = []string{"127.0.0.1:1"} // nothing listens there
			if err := o.normalize(); err != nil {
				t.Fatal(err)
			}
			l, hook := logtest.NewNullLogger()
			env := tc.env
			env.Log = logrus.NewEntry(l)
			reg, err := o.Open(env)
			if err != nil {
				t.Fatalf("Open: %v; want a registry with a temporary cache", err)
			}
			r := reg.(*registry)
			if r.diskCache != nil {
				t.Error("a temporary cache directory is read as a disk cache")
			}
			var warned bool
			for _, e := range hook.AllEntries() {
				err, _ := e.Data[logrus.ErrorKey].(error)
				warned = warned || e.Level == logrus.WarnLevel && err != nil && strings.HasPrefix(err.Error(), tc.field+":")
			}
			if !warned {
				t.Errorf("no warning naming %s in %v", tc.field, hook.AllEntries())
			}
			if err := reg.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
