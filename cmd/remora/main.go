// Command remora is the Remora sidecar proxy.
//
//	remora run -c remora.yaml       run (also: remora -c remora.yaml)
//	remora validate -c remora.yaml  check a config file; exit 1 with its errors
//	remora demo [--serve]           run on an embedded registry with demo backends
//	remora version
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/pkg/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

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
		if _, err := config.Load(*cfgPath); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
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
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := serveUntil(ctx, cfg, log); err != nil {
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
// within the configured drain timeout. Only a failure to start is an error.
func serveUntil(ctx context.Context, cfg *config.Config, log *logrus.Logger) error {
	a, err := startApp(cfg, log)
	if err != nil {
		return err
	}
	log.WithField("version", version).Info("remora started")
	<-ctx.Done()
	log.Info("signal received; shutting down")
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
