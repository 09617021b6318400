package nacos

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	nacoslogger "github.com/nacos-group/nacos-sdk-go/v2/common/logger"
	"github.com/sirupsen/logrus"
)

// The SDK logs through one process-wide logger (by default a file in the
// working directory, or stdout). installSDKLogger replaces it with sdkLog,
// which writes to the logrus logger of the most recently opened Nacos
// registry, with component=nacos-sdk:
//
//   - SDK debug and info messages (it logs every push, with the instance
//     list) at logrus debug;
//   - SDK warnings at info and SDK errors at warn, each message format at
//     most once per sdkLogEvery, with the number of repeats left out, so a
//     server outage (the SDK logs every failed reconnect and request) does
//     not flood the log: the adapter reports the outage itself;
//   - every configured password, secret key and access key, and the values
//     of accessToken, password, secretKey and signature fields (the SDK
//     logs request bodies, which carry the access token), replaced by
//     "[redacted]".
var sdkLog = &sdkLogger{last: map[string]*limitState{}, secrets: map[string]int{}}

// sdkLogEvery is how often one SDK warning or error format is logged.
const sdkLogEvery = time.Minute

var installOnce sync.Once

// installSDKLogger routes the SDK's logs to log (see sdkLog) and remembers
// the secrets to redact; release undoes the latter when the registry
// closes.
func installSDKLogger(log *logrus.Logger, secrets ...string) (release func()) {
	installOnce.Do(func() { nacoslogger.SetLogger(sdkLog) })
	sdkLog.mu.Lock()
	defer sdkLog.mu.Unlock()
	if log != nil {
		sdkLog.target = log
	}
	var added []string
	for _, s := range secrets {
		if s != "" {
			sdkLog.secrets[s]++
			added = append(added, s)
		}
	}
	sdkLog.rebuild()
	var once sync.Once
	return func() {
		once.Do(func() {
			sdkLog.mu.Lock()
			defer sdkLog.mu.Unlock()
			for _, s := range added {
				if sdkLog.secrets[s]--; sdkLog.secrets[s] <= 0 {
					delete(sdkLog.secrets, s)
				}
			}
			sdkLog.rebuild()
		})
	}
}

// sdkLogger implements the SDK's logger.Logger. Its fields are guarded by
// mu; it is called from the SDK's goroutines.
type sdkLogger struct {
	mu       sync.Mutex
	target   *logrus.Logger // nil: discard
	secrets  map[string]int // secret -> registries using it
	replacer *strings.Replacer
	last     map[string]*limitState // rate limiting by message format
	now      func() time.Time       // nil: time.Now
	udpPort  int                    // see takeUDPPort
}

type limitState struct {
	at         time.Time
	suppressed int
}

var _ nacoslogger.Logger = (*sdkLogger)(nil)

// secretFields matches the values of fields that carry credentials, in
// JSON ("accessToken":"v"), Go's %v of maps (accessToken:v) and query
// strings (accessToken=v).
var secretFields = regexp.MustCompile(`(?i)((?:"|\b)(?:accesstoken|password|secretkey|secret_key|signature|spas-signature|ak)"?\s*[:=]\s*\[?"?)([^"&,\s\]}]+)`)

func (l *sdkLogger) rebuild() {
	pairs := make([]string, 0, 2*len(l.secrets))
	for s := range l.secrets {
		pairs = append(pairs, s, redacted)
	}
	l.replacer = nil
	if len(pairs) > 0 {
		l.replacer = strings.NewReplacer(pairs...)
	}
}

// redact removes credentials from msg.
func (l *sdkLogger) redact(msg string) string {
	if l.replacer != nil {
		msg = l.replacer.Replace(msg)
	}
	return secretFields.ReplaceAllString(msg, "${1}"+redacted)
}

func (l *sdkLogger) log(sdkLevel logrus.Level, key string, msg func() string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.target == nil {
		return
	}
	level := logrus.DebugLevel
	switch sdkLevel {
	case logrus.WarnLevel:
		level = logrus.InfoLevel
	case logrus.ErrorLevel:
		level = logrus.WarnLevel
	}
	if !l.target.IsLevelEnabled(level) {
		return
	}
	fields := logrus.Fields{"component": "nacos-sdk"}
	if level <= logrus.InfoLevel { // warnings and errors: rate limited
		now := time.Now()
		if l.now != nil {
			now = l.now()
		}
		st := l.last[key]
		if st != nil && now.Sub(st.at) < sdkLogEvery {
			st.suppressed++
			return
		}
		if st == nil {
			st = &limitState{}
			l.last[key] = st
		}
		if st.suppressed > 0 {
			fields["repeats_not_logged"] = st.suppressed
		}
		st.at, st.suppressed = now, 0
	}
	l.target.WithFields(fields).Log(level, l.redact(msg()))
}

func sprint(args []any) func() string { return func() string { return fmt.Sprint(args...) } }
func sprintf(format string, args []any) func() string {
	return func() string { return fmt.Sprintf(format, args...) }
}

// key1 is the rate-limiting key of an unformatted message: its first
// argument when that is a string (the SDK passes a constant text first).
func key1(args []any) string {
	if len(args) > 0 {
		if s, ok := args[0].(string); ok {
			return s
		}
	}
	return fmt.Sprint(args...)
}

func (l *sdkLogger) Debug(args ...any) { l.log(logrus.DebugLevel, "", sprint(args)) }
func (l *sdkLogger) Info(args ...any)  { l.log(logrus.InfoLevel, "", sprint(args)) }
func (l *sdkLogger) Warn(args ...any)  { l.log(logrus.WarnLevel, key1(args), sprint(args)) }
func (l *sdkLogger) Error(args ...any) { l.log(logrus.ErrorLevel, key1(args), sprint(args)) }

func (l *sdkLogger) Debugf(f string, args ...any) { l.log(logrus.DebugLevel, f, sprintf(f, args)) }
func (l *sdkLogger) Infof(f string, args ...any) {
	if p, ok := strings.CutPrefix(f, udpStartPrefix); ok && len(args) == 0 {
		if port, err := strconv.Atoi(p); err == nil {
			l.mu.Lock()
			l.udpPort = port
			l.mu.Unlock()
		}
	}
	l.log(logrus.InfoLevel, f, sprintf(f, args))
}

// udpStartPrefix starts the SDK's log line (logged with the port already
// in the format) that names the port of a new client's UDP listener.
const udpStartPrefix = "udp server start, port: "

// takeUDPPort returns the UDP port last announced and forgets it. Client
// creation is serialised (sdkguard), so around one creation it is that
// client's.
func (l *sdkLogger) takeUDPPort() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.udpPort
	l.udpPort = 0
	return p
}
func (l *sdkLogger) Warnf(f string, args ...any)  { l.log(logrus.WarnLevel, f, sprintf(f, args)) }
func (l *sdkLogger) Errorf(f string, args ...any) { l.log(logrus.ErrorLevel, f, sprintf(f, args)) }

// Close implements the SDK's logger.Logger; there is nothing to flush.
func (l *sdkLogger) Close() error { return nil }
