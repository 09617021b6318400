// Package testproc holds what the test harnesses that run a registry server
// as a separate process (consultest, nacostest) share: finding the server
// binary, free loopback ports, starting, awaiting and stopping the process,
// log tails, and the package-wide shared servers that TestMain closes.
package testproc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Binary finds a server binary: the file named by $Env if set, else the
// output of the build script Script (relative to the module root), found in
// the working directory or a parent. The result (or error) is computed once
// per process.
type Binary struct {
	Env    string // environment variable with a binary's path
	Script string // build script, relative to the module root
	What   string // what the script builds, as in "building the Consul agent with"
	Kind   string // the binary's kind, as in "set $Env to a consul binary"

	once sync.Once
	path string
	err  error
}

// Path returns the binary's path, computing it on first use.
func (b *Binary) Path() (string, error) {
	b.once.Do(func() { b.path, b.err = b.find() })
	return b.path, b.err
}

func (b *Binary) find() (string, error) {
	if p := os.Getenv(b.Env); p != "" {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("$%s=%s is not an executable file (%v)", b.Env, p, err)
		}
		return p, nil
	}
	path, err := FindScript(b.Script)
	if err != nil {
		return "", fmt.Errorf("%v (set $%s to a %s binary to use that instead)", err, b.Env, b.Kind)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("bash", path)
	cmd.Stderr = io.MultiWriter(&stderr, os.Stderr) // a cold build takes minutes: show progress
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building %s with %s failed: %v\n%s\n(set $%s to a %s binary to use that instead)",
			b.What, path, err, Tail(stderr.String(), 30), b.Env, b.Kind)
	}
	bin := strings.TrimSpace(string(out))
	if bin == "" {
		return "", fmt.Errorf("%s printed no binary path", path)
	}
	return bin, nil
}

// FindScript looks for script (a slash-separated path relative to the
// module root) in the working directory (a test runs in its package's
// directory) and its parents that hold a go.mod.
func FindScript(script string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		p := filepath.Join(dir, filepath.FromSlash(script))
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no %s in %s or any parent directory", script, wd)
		}
		dir = parent
	}
}

// FreePort returns a loopback TCP port that was free when probed.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RetryPortClash calls start, which starts a server on ports that FreePort
// probed free, and calls it again, three times at most, while it fails
// because another process took one of the ports in between ("address
// already in use").
func RetryPortClash[T any](start func() (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		v, err := start()
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return v, err
		}
	}
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Start starts cmd with its stdout and stderr appended to the file logPath,
// to be killed by the kernel if the test binary dies (on Linux). The
// returned channel is closed when the process has exited. The error of a
// failed start names cmd's program as given to exec.Command.
func Start(cmd *exec.Cmd, logPath string) (<-chan struct{}, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	killWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Args[0], err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	return done, nil
}

// Errors of WaitReady.
var (
	ErrExited   = errors.New("the process exited")
	ErrNotReady = errors.New("the process is not ready")
)

// WaitReady polls ready every 100 ms until it reports true (nil), the
// process whose done channel is given exits (ErrExited) or timeout has
// passed (ErrNotReady).
func WaitReady(done <-chan struct{}, timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-done:
			return ErrExited
		default:
		}
		if ready() {
			return nil
		}
		if time.Now().After(deadline) {
			return ErrNotReady
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop sends sig to cmd's process and waits for done to be closed; if that
// takes longer than timeout, it kills the process, waits for it and
// reports true.
func Stop(cmd *exec.Cmd, done <-chan struct{}, sig os.Signal, timeout time.Duration) (killed bool) {
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return false
	case <-time.After(timeout):
	}
	_ = cmd.Process.Kill()
	<-done
	return true
}

// Shared holds the package-wide servers of a harness, by name, and whether
// TestMain runs the tests through Run. The zero value is ready to use.
type Shared[T any] struct {
	active atomic.Bool
	mu     sync.Mutex
	m      map[string]T
	errs   map[string]error
}

// Active reports whether the tests run through Run.
func (s *Shared[T]) Active() bool { return s.active.Load() }

// Get returns the server named name, calling start for it on first use;
// later calls return the same server or the first call's error.
func (s *Shared[T]) Get(name string, start func() (T, error)) (T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.m[name]; ok {
		return v, nil
	}
	if err := s.errs[name]; err != nil {
		var zero T
		return zero, err
	}
	v, err := start()
	if err != nil {
		if s.errs == nil {
			s.errs = map[string]error{}
		}
		s.errs[name] = err
		return v, err
	}
	if s.m == nil {
		s.m = map[string]T{}
	}
	s.m[name] = v
	return v, nil
}

// Run runs the tests with Active true, then calls closeAll, and returns
// the tests' exit code.
func (s *Shared[T]) Run(m *testing.M, closeAll func()) int {
	s.active.Store(true)
	defer s.active.Store(false)
	defer closeAll()
	return m.Run()
}

// CloseAll calls closeFn for every server and forgets them and the errors.
func (s *Shared[T]) CloseAll(closeFn func(name string, v T)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, v := range s.m {
		closeFn(name, v)
		delete(s.m, name)
	}
	clear(s.errs)
}

// CloseAtEnd has t's cleanup close a server that t started: if t failed,
// the tail of the server's log is logged first. pkg and what name it in
// the messages, as in "consultest: closing Consul agent "name": ...".
func CloseAtEnd(t testing.TB, pkg, what, name string, logTail func() string, closeFn func() error) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s: the last lines of %s %q's log:\n%s", pkg, what, name, logTail())
		}
		if err := closeFn(); err != nil {
			t.Errorf("%s: closing %s %q: %v", pkg, what, name, err)
		}
	})
}
