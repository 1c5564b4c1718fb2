package dispatchtest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/dispatch"
)

// Harness is one fresh driver under test and a way to see what reached
// its workers.
type Harness struct {
	Dispatcher dispatch.Dispatcher
	// Delivered blocks until n job IDs reached a worker (or the bound
	// passed) and returns the IDs delivered so far, in any order.
	Delivered func(n int, bound time.Duration) []string
}

// HostileIDs are strings that must never reach a worker.
var HostileIDs = []string{
	"",
	"../../etc/passwd",
	"$(reboot)",
	"`id`",
	"0123456789abcdef0123456789abcdef; rm -rf /",
	"0123456789abcdef0123456789abcdef\n",
	"0123456789ABCDEF0123456789ABCDEF",
	"0123456789abcdef0123456789abcde",
}

// ID returns a valid job ID for n.
func ID(n int) string { return fmt.Sprintf("%032x", n+1) }

// Run runs the suite; newHarness is called once per subtest.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Run("DeliversTheJobID", func(t *testing.T) {
		h := newHarness(t)
		if _, err := h.Dispatcher.Dispatch(context.Background(), ID(1)); err != nil {
			t.Fatalf("Dispatch: %v", err)
		}
		got := h.Delivered(1, 10*time.Second)
		if len(got) != 1 || got[0] != ID(1) {
			t.Fatalf("delivered %q, want [%s]", got, ID(1))
		}
	})
	t.Run("RejectsInvalidIDs", func(t *testing.T) {
		h := newHarness(t)
		for _, id := range HostileIDs {
			_, err := h.Dispatcher.Dispatch(context.Background(), id)
			if !errors.Is(err, dispatch.ErrInvalidJobID) {
				t.Errorf("Dispatch(%q) = %v, want ErrInvalidJobID", id, err)
			}
		}
		// A valid job sent after them is the only thing delivered.
		if _, err := h.Dispatcher.Dispatch(context.Background(), ID(2)); err != nil {
			t.Fatal(err)
		}
		if got := h.Delivered(1, 10*time.Second); len(got) != 1 || got[0] != ID(2) {
			t.Fatalf("delivered %q, want only [%s]", got, ID(2))
		}
	})
	t.Run("DeliversManyJobs", func(t *testing.T) {
		h := newHarness(t)
		const n = 40
		var want []string
		for i := 0; i < n; i++ {
			want = append(want, ID(100+i))
			if _, err := h.Dispatcher.Dispatch(context.Background(), ID(100+i)); err != nil {
				t.Fatalf("Dispatch %d: %v", i, err)
			}
		}
		got := h.Delivered(n, 30*time.Second)
		seen := map[string]bool{}
		for _, id := range got {
			seen[id] = true
		}
		var missing []string
		for _, id := range want {
			if !seen[id] {
				missing = append(missing, id)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Fatalf("%d of %d jobs never delivered: %v", len(missing), n, missing)
		}
	})
	t.Run("RefusesAfterClose", func(t *testing.T) {
		h := newHarness(t)
		if err := h.Dispatcher.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := h.Dispatcher.Dispatch(context.Background(), ID(3)); !errors.Is(err, dispatch.ErrClosed) {
			t.Fatalf("Dispatch after Close = %v, want ErrClosed", err)
		}
		if err := h.Dispatcher.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
	t.Run("HasAName", func(t *testing.T) {
		h := newHarness(t)
		if h.Dispatcher.Name() == "" {
			t.Fatal("Name() is empty: job records could not say how a job was dispatched")
		}
	})
}
