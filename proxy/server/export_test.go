package server

// SetAfterWaitHook sets a function that runs when a connection's wait for
// its next request saw the request arrive, before the request is read;
// nil removes it. Not for parallel tests.
func SetAfterWaitHook(f func()) { testHookAfterWait.Store(hook(f)) }

// SetWaitBoundHook sets a function that runs when a connection's wait for
// its next request ran out its bound (an arrival it may not have seen);
// nil removes it. Not for parallel tests.
func SetWaitBoundHook(f func()) { testHookWaitBound.Store(hook(f)) }

func hook(f func()) *func() {
	if f == nil {
		return nil
	}
	return &f
}

// SetReadFirstSpan sets how many requests a connection reads first after
// its wait missed an arrival, and returns a function that puts it back.
func SetReadFirstSpan(n int32) (restore func()) {
	old := readFirstSpan.Swap(n)
	return func() { readFirstSpan.Store(old) }
}
