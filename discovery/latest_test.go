package discovery

import (
	"context"
	"errors"
	"testing"
	"time"
)

func inst(id string) Instance {
	return Instance{ID: id, Address: "127.0.0.1", Port: 1, Weight: 1, Healthy: true}
}

func nextNow(t *testing.T, l *Latest) ([]Instance, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	return l.Next(ctx)
}

func TestLatest(t *testing.T) {
	boom := errors.New("boom")
	t.Run("coalesces to the newest set", func(t *testing.T) {
		l := NewLatest()
		l.Publish([]Instance{inst("a")})
		l.Publish([]Instance{inst("b"), inst("a")})
		set, err := nextNow(t, l)
		if err != nil || len(set) != 2 || set[0].ID != "a" {
			t.Fatalf("got %v, %v; want [a b] sorted", set, err)
		}
	})
	t.Run("skips a set equal to the last returned", func(t *testing.T) {
		l := NewLatest()
		l.Publish([]Instance{inst("a")})
		nextNow(t, l)
		l.Publish([]Instance{inst("a")})
		if _, err := nextNow(t, l); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("an unchanged set was returned again: %v", err)
		}
	})
	t.Run("first empty set is delivered", func(t *testing.T) {
		l := NewLatest()
		l.Publish(nil)
		set, err := nextNow(t, l)
		if err != nil || set == nil || len(set) != 0 {
			t.Fatalf("got %v, %v; want an empty non-nil set", set, err)
		}
	})
	t.Run("set before error, error once", func(t *testing.T) {
		l := NewLatest()
		l.Publish([]Instance{inst("a")})
		l.Fail(boom)
		if set, err := nextNow(t, l); err != nil || len(set) != 1 {
			t.Fatalf("first: %v, %v; want the set", set, err)
		}
		if _, err := nextNow(t, l); !errors.Is(err, boom) {
			t.Fatalf("second: %v; want boom", err)
		}
		if _, err := nextNow(t, l); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("third: %v; want to block", err)
		}
	})
	t.Run("a set after an error clears it", func(t *testing.T) {
		l := NewLatest()
		l.Fail(boom)
		l.Publish([]Instance{inst("a")})
		if set, err := nextNow(t, l); err != nil || len(set) != 1 {
			t.Fatalf("got %v, %v", set, err)
		}
	})
	t.Run("an unchanged set after an error is returned", func(t *testing.T) {
		l := NewLatest()
		l.Publish([]Instance{inst("a")})
		nextNow(t, l)
		l.Fail(boom)
		nextNow(t, l)
		l.Publish([]Instance{inst("a")})
		if set, err := nextNow(t, l); err != nil || len(set) != 1 {
			t.Fatalf("got %v, %v; want the set again (the registry is back)", set, err)
		}
	})
	t.Run("stop unblocks", func(t *testing.T) {
		l := NewLatest()
		go func() { time.Sleep(10 * time.Millisecond); _ = l.Stop() }()
		if _, err := l.Next(context.Background()); !errors.Is(err, ErrStopped) {
			t.Fatalf("got %v; want ErrStopped", err)
		}
	})
}
