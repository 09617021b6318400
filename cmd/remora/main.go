// Command remora is the Remora sidecar proxy.
//
//	remora run -c remora.yaml       run (also: remora -c remora.yaml)
//	remora validate -c remora.yaml  check a config file; exit 1 with its errors
//	remora demo [--serve]           run on an embedded registry with demo backends
//	remora version
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/internal/gctune"
	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// buildInfo is the running binary's version, the VCS revision it was
// built from (when the build recorded one) and its Go version.
func buildInfo() admin.Build {
	b := admin.Build{Version: version, Revision: "unknown", GoVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				b.Revision = s.Value
			}
		}
	}
	return b
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage:
  remora run -c FILE [--log-level info] [--log-format auto|text|json]
  remora -c FILE                 (same as run)
  remora validate -c FILE
  remora demo [--serve]
  remora version
`

// run executes one command and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("remora "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	cfgPath := fs.String("c", "", "config file")
	fs.StringVar(cfgPath, "config", "", "config file")
	level := fs.String("log-level", "info", "log level")
	format := fs.String("log-format", "auto", "log format: auto (text on a terminal, JSON otherwise), text, json")
	serve := fs.Bool("serve", false, "demo: keep serving until interrupted")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, "remora", version)
		return 0
	case "validate":
		if *cfgPath == "" {
			fmt.Fprintln(stderr, "remora validate: -c FILE is required")
			return 2
		}
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		for _, w := range cfg.Warnings {
			fmt.Fprintf(stderr, "%s: warning: %s\n", *cfgPath, w)
		}
		fmt.Fprintf(stdout, "%s: ok\n", *cfgPath)
		return 0
	case "run":
		if *cfgPath == "" {
			fmt.Fprint(stderr, "remora run: -c FILE is required\n"+usage)
			return 2
		}
		log, err := newLogger(stderr, *level, *format)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		logWarnings(log, cfg)
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		defer gctune.Start(0).Stop() // unless GOGC is set
		if err := serveUntil(ctx, *cfgPath, cfg, log); err != nil {
			log.WithError(err).Error("remora stopped with an error")
			return 1
		}
		return 0
	case "demo":
		lvl := *level
		if !isFlagSet(fs, "log-level") {
			lvl = "warn"
		}
		log, err := newLogger(stderr, lvl, *format)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := runDemo(ctx, stdout, log, *serve); err != nil {
			fmt.Fprintln(stderr, "demo:", err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "remora: unknown command %q\n%s", cmd, usage)
	return 2
}

func isFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// serveUntil runs Remora until ctx ends, then drains in-flight requests
// within the configured drain timeout. It reloads the config file on SIGHUP
// and when the file changes; an invalid file is logged and ignored. Only a
// failure to start is an error.
func serveUntil(ctx context.Context, path string, cfg *config.Config, log *logrus.Logger) error {
	a, err := startApp(cfg, log)
	if err != nil {
		return err
	}
	log.WithField("version", version).Info("remora started")
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	watch := newFileWatch(path)
	tick := time.NewTicker(configPollInterval)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-hup:
			log.Info("SIGHUP: reloading the configuration")
			reloadFile(a, path, log)
			watch.changed() // the file's current state is now applied
		case <-tick.C:
			if watch.changed() {
				log.WithField("file", path).Info("configuration file changed: reloading")
				reloadFile(a, path, log)
			}
		}
	}
	log.Info("signal received; shutting down")
	cfg = a.config()       // the last one applied
	a.draining.Store(true) // /readyz answers 503 from now on
	if cfg.Register != nil {
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second+*cfg.Register.DeregisterDelay)
		a.deregister(rctx, *cfg.Register.DeregisterDelay) // first: consumers stop sending before we drain
		cancel()
	}
	if cfg.DrainDelay > 0 {
		log.WithField("drain_delay", cfg.DrainDelay.String()).Info("not ready; still serving while the change propagates")
		time.Sleep(cfg.DrainDelay)
	}
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	if err := a.shutdown(dctx); err != nil {
		// Requests still running at the deadline were cut; that is the
		// configured outcome of a drain, not a failure of the process.
		log.WithError(err).Warnf("drain did not finish within %v; remaining connections closed", cfg.DrainTimeout)
	}
	log.Info("remora stopped")
	return nil
}

// logWarnings logs what the config's validation found questionable.
func logWarnings(log *logrus.Logger, cfg *config.Config) {
	for _, w := range cfg.Warnings {
		log.Warn("config: " + w)
	}
}

// configPollInterval is how often the config file is checked for changes.
const configPollInterval = time.Second

// reloadFile loads path and applies it; errors keep the running config.
func reloadFile(a *app, path string, log *logrus.Logger) {
	cfg, err := config.Load(path)
	if err == nil {
		logWarnings(log, cfg)
		err = a.reload(cfg)
	} else {
		a.reloaded(false)
	}
	if err != nil {
		log.WithError(err).Error("configuration rejected; the previous one keeps running")
	}
}

// fileWatch notices changes to a file's content (including a replaced
// symlink target, as Kubernetes ConfigMaps do).
type fileWatch struct {
	path string
	last []byte
}

func newFileWatch(path string) *fileWatch {
	w := &fileWatch{path: path}
	w.changed()
	return w
}

// changed reports whether the content differs from the last call's.
func (w *fileWatch) changed() bool {
	data, err := os.ReadFile(w.path)
	if err != nil || bytes.Equal(data, w.last) {
		return false
	}
	w.last = data
	return true
}
