package local

import (
	"runtime/debug"
	"testing"
)

// tightGC lowers GOGC while operations run, puts it back after the last
// one, and leaves a lower setting or a collector turned off alone.
func TestTightGC(t *testing.T) {
	t.Setenv("GOGC", "") // as unset
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	gcPercent := func() int {
		p := debug.SetGCPercent(0)
		debug.SetGCPercent(p)
		return p
	}

	a := tightGC()
	if p := gcPercent(); p != bulkGCPercent {
		t.Fatalf("GOGC %d while an operation runs, want %d", p, bulkGCPercent)
	}
	b := tightGC()
	a()
	a() // twice: counted once
	if p := gcPercent(); p != bulkGCPercent {
		t.Fatalf("GOGC %d while the second operation still runs, want %d", p, bulkGCPercent)
	}
	b()
	if p := gcPercent(); p != 100 {
		t.Fatalf("GOGC %d after both, want 100 back", p)
	}

	for _, set := range []int{20, -1} {
		debug.SetGCPercent(set)
		done := tightGC()
		if p := gcPercent(); p != set {
			t.Fatalf("GOGC %d set by the process became %d", set, p)
		}
		done()
		if p := gcPercent(); p != set {
			t.Fatalf("GOGC %d set by the process is %d after", set, p)
		}
	}

	// GOGC in the environment: the user's setting stays.
	t.Setenv("GOGC", "200")
	debug.SetGCPercent(200)
	done := tightGC()
	if p := gcPercent(); p != 200 {
		t.Fatalf("GOGC=200 from the environment became %d", p)
	}
	done()
	if p := gcPercent(); p != 200 {
		t.Fatalf("GOGC=200 from the environment is %d after", p)
	}
}
