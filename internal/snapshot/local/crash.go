package local

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// CrashEnv names the environment variable of the crash test seam:
// CONVEYOR_SNAPSHOT_CRASH_AT=<point>[:<nth>] makes the process SIGKILL
// itself right after the nth (default first) time it passes the named
// write step, as a power cut or kill -9 would stop it there. It is read
// once, when the program starts; unset, each step costs one load and
// compare. It is for tests of crash safety, never for production.
const CrashEnv = "CONVEYOR_SNAPSHOT_CRASH_AT"

// crashPoint is one named write step of create, prune or repair. Every
// point is declared below, which registers it: CrashPoints lists them, and
// the crash test kills the process at each one.
type crashPoint struct {
	name string
	hits atomic.Int64
}

var crashRegistry = map[string]*crashPoint{}

func newCrashPoint(name string) *crashPoint {
	if _, dup := crashRegistry[name]; dup {
		panic("snapshot: crash point " + name + " declared twice")
	}
	p := &crashPoint{name: name}
	crashRegistry[name] = p
	return p
}

// The write steps. A point is passed once the write it names has landed
// (or failed): killed there, the process leaves exactly that write done
// and the next one undone.
var (
	// Repository creation by the first Open: the wrapped key, then the
	// config.
	crashInitKey    = newCrashPoint("init/key")
	crashInitConfig = newCrashPoint("init/config")
)

// lockCrashPoints are the lock's write steps of one operation: its lock
// written, another's stale lock removed, a refresh, its lock removed.
type lockCrashPoints struct {
	written, staleRemoved, refreshed, released *crashPoint
}

func newLockCrashPoints(op string) *lockCrashPoints {
	return &lockCrashPoints{
		written:      newCrashPoint(op + "/lock-written"),
		staleRemoved: newCrashPoint(op + "/stale-lock-removed"),
		refreshed:    newCrashPoint(op + "/lock-refreshed"),
		released:     newCrashPoint(op + "/lock-released"),
	}
}

var (
	crashCreateLock     = newLockCrashPoints("create")
	crashCreatePack     = newCrashPoint("create/pack")     // each pack uploaded
	crashCreateIndex    = newCrashPoint("create/index")    // the index of the new packs
	crashCreateSnapshot = newCrashPoint("create/snapshot") // the snapshot object

	crashPruneLock          = newLockCrashPoints("prune")
	crashPruneSnapshotDel   = newCrashPoint("prune/snapshot-deleted") // each forgotten snapshot
	crashPrunePack          = newCrashPoint("prune/pack")             // each repacked pack
	crashPruneIndex         = newCrashPoint("prune/index")            // the new index
	crashPruneIndexDeleted  = newCrashPoint("prune/index-deleted")    // each old index object
	crashPrunePackDeleted   = newCrashPoint("prune/pack-deleted")     // each unused pack
	crashRepairLock         = newLockCrashPoints("repair")
	crashRepairPack         = newCrashPoint("repair/pack")            // each pack of salvaged blobs
	crashRepairIndex        = newCrashPoint("repair/index")           // the rebuilt index
	crashRepairIndexDeleted = newCrashPoint("repair/index-deleted")   // each old index object
	crashRepairPackDeleted  = newCrashPoint("repair/damaged-deleted") // each damaged pack

	// Verify and restore write only their shared lock, and a kill leaves
	// that behind just as it would after any step: their lock steps are
	// not crash points.
	noLockCrash = &lockCrashPoints{}
)

// lockCrash returns the lock crash points of op.
func lockCrash(op string) *lockCrashPoints {
	switch op {
	case "create":
		return crashCreateLock
	case "prune":
		return crashPruneLock
	case "repair":
		return crashRepairLock
	}
	return noLockCrash
}

// CrashPoints lists the names of every crash point, sorted.
func CrashPoints() []string {
	out := make([]string, 0, len(crashRegistry))
	for n := range crashRegistry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// crashAt is the point CrashEnv names, nil when unset; crashNth which
// pass of it kills. Read once, after every point is declared.
var (
	crashAt  *crashPoint
	crashNth int64
)

func init() { crashAt, crashNth = parseCrashEnv(os.Getenv(CrashEnv)) }

func parseCrashEnv(v string) (*crashPoint, int64) {
	if v == "" {
		return nil, 0
	}
	name, n, _ := strings.Cut(v, ":")
	nth := int64(1)
	if n != "" {
		i, err := strconv.ParseInt(n, 10, 64)
		if err != nil || i < 1 {
			fmt.Fprintf(os.Stderr, "%s=%q: the count after ':' must be a positive integer\n", CrashEnv, v)
			os.Exit(2)
		}
		nth = i
	}
	p := crashRegistry[name]
	if p == nil {
		fmt.Fprintf(os.Stderr, "%s=%q names no crash point; the points are: %s\n", CrashEnv, v, strings.Join(CrashPoints(), " "))
		os.Exit(2)
	}
	return p, nth
}

// hit kills the process when it is the point CrashEnv names, the nth time.
// A nil point is never hit. With the seam on, every point counts its
// passes (crashHits), so that a test can learn how many there are.
func (p *crashPoint) hit() {
	if crashAt == nil || p == nil {
		return
	}
	if p.hits.Add(1) != crashNth || crashAt != p {
		return
	}
	fmt.Fprintf(os.Stderr, "conveyor: crash point %s:%d reached: killing this process (%s is set)\n", p.name, crashNth, CrashEnv)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}

// crashHits returns how many times each point was passed, with the seam
// on (all zero when it is off).
func crashHits() map[string]int64 {
	out := map[string]int64{}
	for n, p := range crashRegistry {
		out[n] = p.hits.Load()
	}
	return out
}
