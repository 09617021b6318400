package main

// Command remora is the Remora sidecar proxy.
//
//	remora run -c remora.yaml       run (also: remora -c remora.yaml)
//	remora validate remora.yaml     check a config file; exit 1 with its errors
//	remora demo [--serve]           run on an embedded registry with demo backends
//	remora version
//	remora help [COMMAND]
import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/internal/asyncwrite"
	"github.com/remora-mesh/remora/internal/gctune"
	"github.com/remora-mesh/remora/internal/pageout"
	"github.com/remora-mesh/remora/internal/regularfile"
	"github.com/remora-mesh/remora/internal/strictyaml"
	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/upstream"
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

// printVersion prints "remora VERSION REVISION GOVERSION".
func printVersion(w io.Writer) {
	b := buildInfo()
	fmt.Fprintln(w, "remora", b.Version, b.Revision, b.GoVersion)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// command is one of remora's commands: its flags, and what it does with
// them and its arguments. run returns the exit code.
type command struct {
	name, args, summary, help string
	flags                     func(fs *flag.FlagSet, o *cmdOpts)
	run                       func(o *cmdOpts, args []string, stdout, stderr io.Writer) int
}

// cmdOpts are the flags the commands share.
type cmdOpts struct {
	config, level, format string
	serve                 bool
	fs                    *flag.FlagSet
}

func configFlag(fs *flag.FlagSet, o *cmdOpts) {
	fs.StringVar(&o.config, "c", "", "the config file")
	fs.StringVar(&o.config, "config", "", "the config file (same as -c)")
}

func logFlags(fs *flag.FlagSet, o *cmdOpts, level string) {
	fs.StringVar(&o.level, "log-level", level, "log level: debug, info, warn, error")
	fs.StringVar(&o.format, "log-format", "auto", "log format: auto (text on a terminal, JSON otherwise), text, json")
}

// commands are remora's commands, in the order help lists them.
var commands = []*command{
	{name: "run", args: "-c FILE", summary: "run the sidecar proxy on a config file",
		help: "Runs until SIGTERM or SIGINT, then drains (drain_delay, drain_timeout). The config is reloaded\n" +
			"on SIGHUP and whenever the file changes; a file that does not validate is logged and ignored.",
		flags: func(fs *flag.FlagSet, o *cmdOpts) { configFlag(fs, o); logFlags(fs, o, "info") },
		run:   cmdRun},
	{name: "validate", args: "FILE | -c FILE", summary: "check a config file: exit 0, or 1 with every error",
		help:  "Prints every error with its field path and line, and the warnings; nothing is opened or bound.",
		flags: configFlag,
		run:   cmdValidate},
	{name: "demo", args: "[--serve]", summary: "run on an embedded registry with demo backends and show it working",
		flags: func(fs *flag.FlagSet, o *cmdOpts) {
			fs.BoolVar(&o.serve, "serve", false, "keep serving until interrupted, to try it with curl")
			logFlags(fs, o, "warn")
		},
		run: cmdDemo},
	drainCommand,
	{name: "version", summary: "print the version, the commit and the Go version", run: func(_ *cmdOpts, _ []string, stdout, _ io.Writer) int {
		printVersion(stdout)
		return 0
	}},
	{name: "help", args: "[COMMAND]", summary: "show this help, or a command's", run: nil},
}

// environment lists the variables remora reads, for help and the README.
const environment = `Environment:
  REMORA_LABELS            labels for the local application's registration ("canary=true,version=v2")
  POD_IP                   the address registered for the local application (default: the host's first IPv4 address, else IPv6, but loopback and link-local)
  REMORA_ZONE              Remora's own zone, for upstreams with locality: (unless zone: is set)
  GOGC                     the Go garbage collector's target; unset, Remora tunes it (lets the heap grow 4 MiB)
  REMORA_PAGEOUT           "off" keeps the binary's start-up pages mapped (default: unmapped a second after ready)
  CONSUL_HTTP_TOKEN_FILE, CONSUL_HTTP_TOKEN
                           the Consul ACL token, when a consul registry sets neither token nor token_file
`

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprint(w, "remora, a sidecar proxy: service discovery, load balancing, health and canary releases beside one application.\n\nUsage:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  remora %-9s %-20s %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintf(w, "  remora %-30s %s\n\n", "-c FILE", "the same as remora run -c FILE")
	fmt.Fprintf(w,
		"Flags: -h, --help (this help; after a command, its help), --version.\n"+
			"Run remora help COMMAND for a command's flags.\n\n%s", environment)
}

func commandUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: remora %s %s\n\n%s.\n", c.name, c.args, strings.ToUpper(c.summary[:1])+c.summary[1:])
	if c.help != "" {
		fmt.Fprintf(w, "%s\n", c.help)
	}
	if fs != nil {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// run executes one command and returns the exit code: 0, 1 when the
// command failed, 2 for a usage error.
func run(args []string, stdout, stderr io.Writer) int {
	name := "run"
	switch {
	case len(args) == 0:
		usage(stderr)
		return 2
	case args[0] == "-h" || args[0] == "--help" || args[0] == "-help":
		usage(stdout)
		return 0
	case args[0] == "--version" || args[0] == "-version":
		printVersion(stdout)
		return 0
	case args[0] != "" && args[0][0] != '-':
		name, args = args[0], args[1:]
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(stderr, "remora: unknown command %q\n\n", name)
		usage(stderr)
		return 2
	}
	if c.name == "help" {
		switch len(args) {
		case 0:
			usage(stdout)
			return 0
		case 1:
			if h := lookup(args[0]); h != nil {
				commandUsage(stdout, h, newFlags(h, &cmdOpts{}, io.Discard))
				return 0
			}
			fmt.Fprintf(stderr, "remora help: unknown command %q\n", args[0])
		default:
			fmt.Fprintln(stderr, "remora help: one command at most")
		}
		return 2
	}
	o := &cmdOpts{}
	fs := newFlags(c, o, stderr)
	fs.Usage = func() { commandUsage(stderr, c, fs) }
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			commandUsage(stdout, c, fs)
			return 0
		}
		return 2
	}
	o.fs = fs
	return c.run(o, fs.Args(), stdout, stderr)
}

func newFlags(c *command, o *cmdOpts, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("remora "+c.name, flag.ContinueOnError)
	fs.SetOutput(out)
	if c.flags != nil {
		c.flags(fs, o)
	}
	return fs
}

// noArgs refuses arguments a command does not take.
func noArgs(name string, args []string, stderr io.Writer) bool {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "remora %s: unexpected argument %q (see remora help %s)\n", name, args[0], name)
		return false
	}
	return true
}

func cmdValidate(o *cmdOpts, args []string, stdout, stderr io.Writer) int {
	path := o.config
	switch {
	case path == "" && len(args) == 1:
		path = args[0]
	case path != "" && !noArgs("validate", args, stderr):
		return 2
	case len(args) > 1:
		fmt.Fprintf(stderr, "remora validate: one file at a time (got %d)\n", len(args))
		return 2
	case path == "":
		fmt.Fprintln(stderr, "remora validate: which file? remora validate FILE")
		return 2
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "%s: warning: %s\n", path, w)
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return 0
}

func cmdRun(o *cmdOpts, args []string, _, stderr io.Writer) int {
	if !noArgs("run", args, stderr) {
		return 2
	}
	if o.config == "" {
		fmt.Fprintln(stderr, "remora run: -c FILE is required (see remora help run)")
		return 2
	}
	// Both logs are written on goroutines of their own: a reader that
	// stalls (a full pipe, a stopped log shipper) must not stop the
	// requests that log; lines it has no room for are dropped and
	// counted. SIGPIPE is caught: its default action would end the
	// process on the first line written to a standard stream whose
	// reader went away; caught, the write fails (EPIPE) and is dropped.
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	defer signal.Stop(pipe)
	processLogWriter, accessLogWriter = asyncwrite.New(stderr, logQueue), asyncwrite.New(os.Stdout, logQueue)
	accessLogOutput = accessLogWriter
	defer accessLogWriter.Flush(time.Second)
	defer processLogWriter.Flush(time.Second)
	log, err := newLogger(processLogWriter, o.level, o.format)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	asStandardLogger(log)
	// SIGHUP from now on asks for a reload once serving: its default
	// action would end the process while it starts.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// The file as it is before it is loaded: a change made from then on,
	// while Remora starts too, is a change to reload.
	watch := newFileWatch(o.config)
	cfg, err := config.Load(o.config)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	logWarnings(log, cfg)
	ctx, stop := shutdownSignals()
	defer stop()
	defer gctune.Start(0).Stop() // unless GOGC is set
	if err := serveUntil(ctx, o.config, watch, hup, cfg, log); err != nil {
		if ctx.Err() != nil {
			// SIGTERM or SIGINT during the start (waiting for a busy
			// address): a stop, as at any other time.
			log.WithError(err).Info("remora stopped by a signal before it was serving")
			return 0
		}
		log.WithError(err).Error("remora stopped with an error")
		return 1
	}
	return 0
}

// shutdownSignals returns a context that the first SIGINT or SIGTERM
// ends; a second one ends the process at once, by the signal's default
// action, without waiting for the drain. Both are caught from the start
// (the channel holds two), so a second signal that comes right after the
// first is never lost. stop releases the signals.
func shutdownSignals() (ctx context.Context, stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		select {
		case <-sigs:
		case <-done:
			return
		}
		cancel()
		select {
		case sig := <-sigs:
			signal.Reset(os.Interrupt, syscall.SIGTERM)
			if s, ok := sig.(syscall.Signal); ok {
				_ = syscall.Kill(os.Getpid(), s)
			}
		case <-done:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			cancel()
		})
	}
}

func cmdDemo(o *cmdOpts, args []string, stdout, stderr io.Writer) int {
	if !noArgs("demo", args, stderr) {
		return 2
	}
	log, err := newLogger(stderr, o.level, o.format)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runDemo(ctx, stdout, log, o.serve); err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	return 0
}

// serveUntil runs Remora until ctx ends, then drains in-flight requests
// within the configured drain timeout. It reloads the config file on hup
// (SIGHUP) and when the file changes from what watch last saw (taken
// before cfg was loaded from it); an invalid file is logged and ignored.
// Only a failure to start is an error.
func serveUntil(ctx context.Context, path string, watch *fileWatch, hup <-chan os.Signal, cfg *config.Config, log *logrus.Logger) error {
	a, err := startApp(ctx, cfg, log)
	if err != nil {
		return err
	}
	log.WithField("version", version).Info("remora started")
	watch.named = configFiles(a.config())
	go pageOutOnceReady(ctx, a, log)
	tick := time.NewTicker(configPollInterval)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-hup:
			log.Info("SIGHUP: reloading the configuration")
			// The file's current state (or a later one) is applied now.
			data, err := watch.read()
			if err == nil {
				watch.last = data
			}
			reloadFile(a, path, data, err, log)
			watch.named = configFiles(a.config())
		case <-tick.C:
			if data, changed := watch.poll(log); changed {
				log.WithField("file", path).Info("configuration file changed: reloading")
				reloadFile(a, path, data, nil, log)
			} else if watch.namedChanged(a.config()) && watch.last != nil {
				// A rotated Secret: the same config, new token or certificates.
				log.WithField("file", path).Info("a file the configuration names changed (a token, a password, a certificate): reloading")
				reloadFile(a, path, watch.last, nil, log)
			}
			watch.named = configFiles(a.config())
		}
	}
	log.Info("signal received; shutting down")
	cfg = a.config() // the last one applied
	a.markStopping() // /readyz answers 503 from now on, whatever /undrain says
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

// reloadFile applies data, the content of the config file at path (or
// readErr, the reason it could not be read); errors keep the running
// config.
func reloadFile(a *app, path string, data []byte, readErr error, log *logrus.Logger) {
	var cfg *config.Config
	err := readErr
	if err == nil {
		cfg, err = config.Parse(data, filepath.Dir(path))
		err = strictyaml.InFile(filepath.Base(path), err)
	}
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

// errEmptyConfig is the error of a config file that holds nothing: one
// being written (truncated, then written), which is never applied.
var errEmptyConfig = errors.New("the file holds no configuration (empty, or comments only: being written?); it is not applied on reload")

// holdsNothing reports whether a config file's content is no YAML
// document, or a null one: blank, comments only, a bare "---". Applied,
// it would stop every upstream and close every registry.
func holdsNothing(data []byte) bool {
	if len(bytes.TrimSpace(data)) == 0 {
		return true
	}
	top, err := strictyaml.Parse(data)
	return err == nil && (top == nil || top.ShortTag() == "!!null")
}

// configSettle is how long a changed config file must keep its content
// before it is applied: a writer that truncates the file and then writes
// it, or writes it in pieces, is not read half-way.
const configSettle = 100 * time.Millisecond

// fileWatch notices changes to a file's content (including a replaced
// symlink target, as Kubernetes ConfigMaps do). Only a content that has
// settled and is not empty counts: a file truncated and then written, or
// deleted and created again, is applied once it is complete.
type fileWatch struct {
	path   string
	last   []byte // the content last applied (or loaded at start)
	settle time.Duration
	state  string // what poll last logged about a file it did not apply
	// named is the digest of the files the applied config names (see
	// configFiles), as they were when it was last taken.
	named string
}

// namedChanged reports whether the files that cfg (the applied config)
// names differ from when named was taken.
func (w *fileWatch) namedChanged(cfg *config.Config) bool {
	return configFiles(cfg) != w.named
}

func newFileWatch(path string) *fileWatch {
	w := &fileWatch{path: path, settle: configSettle}
	if data, err := regularfile.ReadFile(path); err == nil {
		w.last = data
	}
	return w
}

// read returns the file's content once it has settled: the same in two
// reads settle apart (tried for ten settle periods at most). An empty
// file is errEmptyConfig.
func (w *fileWatch) read() ([]byte, error) {
	data, err := regularfile.ReadFile(w.path)
	for try := 0; err == nil; try++ {
		if try == 10 {
			return nil, errors.New("the file kept changing while it was read; not applied")
		}
		time.Sleep(w.settle)
		var again []byte
		if again, err = regularfile.ReadFile(w.path); err == nil && bytes.Equal(again, data) {
			break
		}
		data = again
	}
	if err != nil {
		return nil, err
	}
	if holdsNothing(data) {
		return nil, errEmptyConfig
	}
	return data, nil
}

// poll reports whether the content differs from the one applied last,
// and returns it; it becomes the last one. A file that cannot be read, is
// empty or is still being written is no change (a missing or empty one
// is logged once).
func (w *fileWatch) poll(log *logrus.Logger) ([]byte, bool) {
	data, err := regularfile.ReadFile(w.path)
	if err == nil && bytes.Equal(data, w.last) {
		w.state = ""
		return nil, false
	}
	if err == nil {
		// Changed: applied once it has settled.
		time.Sleep(w.settle)
		var again []byte
		if again, err = regularfile.ReadFile(w.path); err == nil && !bytes.Equal(again, data) {
			return nil, false // still being written: the next poll sees it
		}
		if err == nil && holdsNothing(data) {
			err = errEmptyConfig
		}
	}
	if err != nil {
		if state := err.Error(); state != w.state {
			w.state = state
			log.WithError(err).WithField("file", w.path).Warn("configuration file not applied; the running configuration stays until it is written again")
		}
		return nil, false
	}
	w.state = ""
	w.last = data
	return data, true
}

// pageOutWait bounds the wait for every upstream's first node set before
// pageOutOnceReady unmaps the start-up pages anyway; pageOutSettle is how
// long after that it waits, so that start-up has finished touching them.
const (
	pageOutWait   = 10 * time.Second
	pageOutSettle = time.Second
)

// pageOutOnceReady unmaps the pages of the binary that start-up touched
// (see package pageout), unless $REMORA_PAGEOUT is "off". It waits until
// every upstream has its first node set (or pageOutWait has passed), then
// pageOutSettle; it runs once, on its own goroutine, and gives up when
// ctx ends.
func pageOutOnceReady(ctx context.Context, a *app, log *logrus.Logger) {
	if os.Getenv("REMORA_PAGEOUT") == "off" {
		return
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for giveUp := time.Now().Add(pageOutWait); !allReady(a.Table()) && time.Now().Before(giveUp); {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(pageOutSettle):
	}
	n, err := pageout.Binary()
	if err != nil {
		log.WithError(err).Debug("the binary's start-up pages stay mapped")
		return
	}
	log.WithField("bytes", n).Debug("the binary's start-up pages unmapped")
}

// allReady reports whether every upstream of t has its first node set.
func allReady(t *upstream.Table) bool {
	for _, u := range t.All() {
		if !u.Ready() {
			return false
		}
	}
	return true
}
