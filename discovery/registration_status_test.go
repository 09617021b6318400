package discovery

import (
	"errors"
	"testing"
)

func TestStatusRecorder(t *testing.T) {
	r := NewStatusRecorder()
	if st := r.Status(); st.Up || st.Since.IsZero() || st.LastError != "" {
		t.Fatalf("new recorder: %+v", st)
	}
	for i, tc := range []struct {
		step        func() bool
		wantChanged bool
		wantUp      bool
		wantErr     string
		wantRereg   uint64
	}{
		{func() bool { return r.Down(errors.New("unreachable")) }, false, false, "unreachable", 0},
		{func() bool { return r.Up(false) }, true, true, "unreachable", 0},
		{func() bool { return r.Up(false) }, false, true, "unreachable", 0},
		{func() bool { return r.Down(errors.New("lease lost")) }, true, false, "lease lost", 0},
		{func() bool { return r.Up(true) }, true, true, "lease lost", 1},
		{func() bool { return r.Up(true) }, false, true, "lease lost", 2},
		{func() bool { return r.Down(nil) }, true, false, "lease lost", 2},
	} {
		before := r.Status()
		changed := tc.step()
		st := r.Status()
		if changed != tc.wantChanged || st.Up != tc.wantUp || st.LastError != tc.wantErr || st.Reregistrations != tc.wantRereg {
			t.Fatalf("step %d: changed %v, status %+v", i, changed, st)
		}
		if !changed && !st.Since.Equal(before.Since) {
			t.Fatalf("step %d: Since moved from %v to %v though Up did not change", i, before.Since, st.Since)
		}
	}
}
