package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// A volume leaving service (an Auto Scaling scale-in, a Spot interruption)
// is drained: a marker file, draining, tells every `worker run` starting
// on it to take no job, and the processes already running are listed in
// runs/<pid> (the same holder record as a job lock's) so that the drain
// can signal them to hand their jobs back.

// ErrDraining is returned by CheckDraining while the volume is drained.
var ErrDraining = errors.New("this worker is leaving service: it takes no new job")

func (v *Volume) drainPath() string { return filepath.Join(v.root, "draining") }

// Drain marks the volume as leaving service, with why.
func (v *Volume) Drain(reason string) error {
	if err := os.WriteFile(v.drainPath(), []byte(time.Now().UTC().Format(time.RFC3339)+" "+reason+"\n"), 0o640); err != nil {
		return fmt.Errorf("mark the volume draining: %w", err)
	}
	return nil
}

// Undrain clears the mark: the worker is in service again (started from a
// warm pool).
func (v *Volume) Undrain() error {
	if err := os.Remove(v.drainPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("clear the draining mark: %w", err)
	}
	return nil
}

// CheckDraining returns an error wrapping ErrDraining, with the reason,
// while the volume is marked draining.
func (v *Volume) CheckDraining() error {
	b, err := os.ReadFile(v.drainPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the draining mark: %w", err)
	}
	return fmt.Errorf("%w (since %s)", ErrDraining, trimNL(string(b)))
}

func trimNL(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

// Run is this process registered as running jobs on the volume.
type Run struct{ path string }

// RegisterRun records this process under runs/, for a drain to find;
// Done removes it.
func (v *Volume) RegisterRun() (*Run, error) {
	dir := filepath.Join(v.root, "runs")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("register the run: %w", err)
	}
	p := filepath.Join(dir, strconv.Itoa(os.Getpid()))
	if err := writeHolder(p, self()); err != nil {
		return nil, err
	}
	return &Run{path: p}, nil
}

// Done unregisters the run.
func (r *Run) Done() { _ = os.Remove(r.path) }

// Runs returns the PIDs of the live processes registered on the volume;
// records of dead ones are removed.
func (v *Volume) Runs() ([]int, error) {
	dir := filepath.Join(v.root, "runs")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	var pids []int
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		h, err := readHolder(p)
		if err != nil {
			continue // being written, or not ours
		}
		if !holderAlive(h) {
			_ = os.Remove(p)
			continue
		}
		pids = append(pids, h.PID)
	}
	return pids, nil
}

// SignalRuns sends sig to every live registered run and returns how many
// it signalled.
func (v *Volume) SignalRuns(sig syscall.Signal) (int, error) {
	pids, err := v.Runs()
	n := 0
	for _, pid := range pids {
		if syscall.Kill(pid, sig) == nil {
			n++
		}
	}
	return n, err
}
