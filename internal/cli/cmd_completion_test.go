package cli

import (
	"testing"
	"time"
)

// The look-up behind a <TAB> is bounded at 2s unless
// CONVEYOR_COMPLETION_TIMEOUT names another positive duration.
func TestCompletionBound(t *testing.T) {
	for _, c := range []struct {
		env  string
		want time.Duration
	}{
		{"", 2 * time.Second},
		{"5s", 5 * time.Second},
		{"250ms", 250 * time.Millisecond},
		{"soon", 2 * time.Second},
		{"-1s", 2 * time.Second},
		{"0", 2 * time.Second},
	} {
		t.Setenv(completionTimeoutEnv, c.env)
		if got := completionBound(); got != c.want {
			t.Errorf("%s=%q: bound %s, want %s", completionTimeoutEnv, c.env, got, c.want)
		}
	}
}
