package local

import (
	"os"
	"runtime/debug"
	"sync"
)

// While a snapshot, restore, prune, verify or repair runs, the collector
// keeps half the usual headroom (GOGC=50 rather than 100).
//
// What such an operation keeps live is mostly a few large buffers that
// hold no pointers (pack buffers, the chunkers' windows, the encoders'
// history): marking them costs next to nothing, but with the default
// setting the heap may grow to twice their size before a collection, and
// that headroom was a good part of the peak RSS (initial snapshot of the
// bench's 1.6 GB volume: 145-158 MB at GOGC=100, 133-139 MB at 50, for
// the same CPU; at 25 the CPU grew by a tenth). A process that set a
// lower GOGC, or turned the collector off, keeps its setting, and so does
// one started with GOGC in its environment: the user's choice wins.
const bulkGCPercent = 50

var gcState struct {
	sync.Mutex
	users int
	prev  int
	set   bool // whether the users' first changed the setting
}

// tightGC lowers the collector's headroom until the returned function is
// called; operations may overlap, the setting is put back after the last.
func tightGC() (done func()) {
	gcState.Lock()
	defer gcState.Unlock()
	if gcState.users == 0 && os.Getenv("GOGC") != "" {
		gcState.set = false
	} else if gcState.users == 0 {
		gcState.prev = debug.SetGCPercent(bulkGCPercent)
		gcState.set = true
		if gcState.prev <= bulkGCPercent { // off (negative), or already tighter
			debug.SetGCPercent(gcState.prev)
			gcState.set = false
		}
	}
	gcState.users++
	var once sync.Once
	return func() {
		once.Do(func() {
			gcState.Lock()
			defer gcState.Unlock()
			gcState.users--
			if gcState.users == 0 && gcState.set {
				debug.SetGCPercent(gcState.prev)
			}
		})
	}
}
