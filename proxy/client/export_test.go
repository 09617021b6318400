package client

// SetAfterWaitHook sets a function that runs when the wait for a node's
// answer saw it arrive, before it is read; nil removes it. Not for
// parallel tests.
func SetAfterWaitHook(f func()) {
	if f == nil {
		testHookAfterWait.Store(nil)
		return
	}
	testHookAfterWait.Store(&f)
}
