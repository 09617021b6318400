package discovery

import (
	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/internal/named"
)

// Factory creates registries of one type ("etcd", "consul", ...).
//
// Configuration is parsed and validated first, without touching the network
// (so that `remora validate` can check a file), and opened later.
type Factory interface {
	// Type is the name used in the `type:` field of a registry's config.
	Type() string
	// Parse decodes this type's options with decode, which fills a struct
	// from the options block and rejects unknown fields, and validates them.
	// Error messages name fields relative to the block ("endpoints[0]: ...").
	Parse(decode func(v any) error) (Options, error)
}

// RegistrarFactory is implemented by the Factory of a registry type whose
// registries are Registrars (they can announce the local application).
// `remora validate` refuses register: on a registry of any other type: a
// capability known from an opened registry only would stop `remora run`,
// which opens it, after validation passed.
type RegistrarFactory interface {
	Factory
	// Registers is a marker: registries of this type are Registrars.
	Registers()
}

// Options are a registry's parsed, validated settings.
type Options interface {
	// Open creates the registry. It must not block on the network: a
	// registry that cannot be reached yet is reported by its watchers.
	// An error stops `remora run`, so Open fails only for what validation
	// refuses (see Checker): a file that was readable then and vanished
	// since. What depends on the environment rather than on the config
	// file (in-cluster credentials, /etc/resolv.conf, a variable naming a
	// file) does not fail Open: the registry's watchers report it.
	Open(env Env) (Registry, error)
}

// EnvFiler is implemented by Options that read a file the config does
// not name but the environment does (a variable naming a token file):
// Remora watches the files EnvFiles returns, absolute, as it watches the
// files the config names, and reopens the registry when one changes.
type EnvFiler interface {
	EnvFiles() []string
}

// Checker is implemented by Options that name files (secrets, TLS
// certificates, a kubeconfig) or directories. `remora validate`, and the
// loading of a config at start and on reload, call Check after Parse so
// that a file that Open would fail on is refused with the config rather
// than stopping `remora run`.
type Checker interface {
	// Check reads and parses the files as Open would, resolving relative
	// names against baseDir (the config file's directory). It does not
	// touch the network and does not depend on the environment. Errors
	// name the field relative to the block ("token_file: open ...: no
	// such file or directory"), never a secret's content, one per line or
	// joined (errors.Join).
	Check(baseDir string) error
}

// ServiceValidator is implemented by Options whose service names have a
// syntax of their own (a Kubernetes [NAMESPACE/]NAME[:PORT], a DNS name
// with its port): `remora validate` checks every upstream's service, and
// its canary's, with it rather than leaving a bad name to Watch.
type ServiceValidator interface {
	// ValidateService reports what is wrong with service, or nil; the
	// error quotes service.
	ValidateService(service string) error
}

// RegistrationValidator is implemented by Options whose registry refuses
// some registrations outright, whatever its state: a service name or an
// instance ID its keys cannot hold, a weight beyond its range, a metadata
// key it rejects. `remora validate` checks the register: block with it
// (at start and on reload), so that such a value is a config error rather
// than a registration retried, and refused, for good; the adapter's
// Register refuses the same values with the same check.
type RegistrationValidator interface {
	// ValidateRegistration reports what is wrong with registering inst
	// under service, or nil. Each error names the register: block's field
	// ("service: ...", "id: ...", "weight: ...", "metadata: ..."), one per
	// line or joined (errors.Join), and quotes the value.
	ValidateRegistration(service string, inst Instance) error
}

// Env is what a registry gets from the process that opens it.
type Env struct {
	// Name is the registry's name in the config, for logs.
	Name string
	// BaseDir resolves relative file names (the config file's directory).
	BaseDir string
	// DataDir is where the registry may keep state; may be empty.
	DataDir string
	// Log is the logger to use; never nil when opened by Remora.
	Log *logrus.Entry
}

// Logger returns env.Log, or a logger that discards when it is nil.
func (env Env) Logger() *logrus.Entry {
	if env.Log != nil {
		return env.Log
	}
	l := logrus.New()
	l.SetOutput(discard{})
	return logrus.NewEntry(l)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

var factories = named.New[Factory]("discovery: registry type")

// Register makes a factory available under its type name. It is called from
// adapters' init functions and panics on a duplicate, a programming error.
func Register(f Factory) { factories.Add(f.Type(), f) }

// Lookup returns the factory registered under typ.
func Lookup(typ string) (Factory, bool) { return factories.Get(typ) }

// Types lists the registered type names, sorted.
func Types() []string { return factories.Names() }
