package nacostest

import nacoslogger "github.com/nacos-group/nacos-sdk-go/v2/common/logger"

// The SDK's logger is process-wide and, unless one is set, the first client
// creates a file logger in its LogDir, which it keeps writing to after the
// server's directory is removed (recreating it). The helpers' clients log
// nowhere; an adapter opened in the same test binary installs its own
// logger over this one.
func init() { nacoslogger.SetLogger(discard{}) }

type discard struct{}

func (discard) Info(...any)           {}
func (discard) Warn(...any)           {}
func (discard) Error(...any)          {}
func (discard) Debug(...any)          {}
func (discard) Infof(string, ...any)  {}
func (discard) Warnf(string, ...any)  {}
func (discard) Errorf(string, ...any) {}
func (discard) Debugf(string, ...any) {}
func (discard) Close() error          { return nil }
