// Command snapshot benchmarks Conveyor's volume snapshots against restic on
// a generated volume: initial snapshot, incremental after changing about
// 5%, unchanged, full restore, prune after 5 snapshots. Each operation of
// each tool runs as a child process, so wall time, CPU time and peak RSS
// come from the child's rusage. Conveyor's child runs the embedded S3
// server and the snapshot engine in one process (its CPU and memory count),
// restic's backs up to a local repository. -shape small is a volume of
// 1,000,000 files of 0-4 KiB (times -scale); -baseline runs a second
// Conveyor, built from another commit, in the same runs. See
// bench/README.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

type options struct {
	tmp      string
	scale    float64
	runs     int
	keep     bool
	restic   string
	workers  int
	shape    string
	baseline string
	prune    bool
	// deleteLate: nothing is deleted before the bench ends (see main).
	deleteLate bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "child" {
		os.Exit(child(os.Args[2:]))
	}
	if len(os.Args) > 2 && os.Args[1] == "generate" {
		// For profiling by hand: generate DIR [SCALE [SHAPE]]
		scale, name := 1.0, "mixed"
		if len(os.Args) > 3 {
			fmt.Sscan(os.Args[3], &scale)
		}
		if len(os.Args) > 4 {
			name = os.Args[4]
		}
		sh, ok := shapes[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown shape %q: mixed or small\n", name)
			os.Exit(2)
		}
		st, err := sh.generate(os.Args[2], scale, 0)
		fmt.Println(st.files, st.bytes, err)
		return
	}
	if len(os.Args) > 2 && os.Args[1] == "change" {
		// For profiling by hand: change DIR [SCALE [SHAPE [PART [SEED]]]]
		// (the bench's changes: part 1 before the incremental snapshot,
		// 0.25 before each of the two more before prune).
		scale, name, part, seed := 1.0, "mixed", 1.0, int64(1)
		for i, p := range []any{&scale, &name, &part, &seed} {
			if len(os.Args) > 3+i {
				fmt.Sscan(os.Args[3+i], p)
			}
		}
		sh, ok := shapes[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown shape %q: mixed or small\n", name)
			os.Exit(2)
		}
		fmt.Println(sh.change(os.Args[2], scale, part, seed))
		return
	}
	var o options
	flag.StringVar(&o.tmp, "tmp", "", "parent of the temp dir (needs extended attributes and ~3x the volume free)")
	flag.Float64Var(&o.scale, "scale", 1, "volume size factor: 1 is ~2 GB, 0.1 a quick run")
	flag.IntVar(&o.runs, "runs", 1, "repetitions; the median is reported")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp dir")
	flag.StringVar(&o.restic, "restic", "restic", "restic binary; the goals are against 0.18.1 (go install github.com/restic/restic/cmd/restic@v0.18.1)")
	flag.IntVar(&o.workers, "workers", 0, "conveyor snapshot workers (0: GOMAXPROCS)")
	flag.StringVar(&o.shape, "shape", "mixed", "volume: mixed (logs, binaries, 20,000 small files; ~2 GB at scale 1) or small (1,000,000 files of 0-4 KiB at scale 1)")
	flag.StringVar(&o.baseline, "baseline", "", "a bench/snapshot binary built from another commit: its Conveyor runs too, interleaved, as \"baseline\"")
	flag.BoolVar(&o.prune, "prune", true, "also measure prune (two more changes and snapshots per run)")
	// On a filesystem without a journal, ext4 will not reuse an inode
	// deleted in the last minute (five while its inode table block is
	// dirty) and skips such inodes one by one for every file it creates:
	// 20,000 files created right after deleting 40,000 took 7.3 s here,
	// 0.37 s otherwise. Deleting a volume, or the last restore, before a
	// restore charged that to whichever tool came next.
	flag.BoolVar(&o.deleteLate, "delete-late", true, "delete nothing before the bench ends (each tool, each run has its own volume and restore target); false: delete as it goes, using less disk")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/snapshot:", err)
		os.Exit(1)
	}
}

// phases, in order.
// "on disk" is the restore until its data is on the disk: its wall time
// plus a sync(2) right after it (restic leaves its writes to the page
// cache; Conveyor writes most of its data with O_DIRECT). No target: the
// goal is judged on the restore itself.
var phases = []string{"initial", "incremental", "unchanged", "restore", "on disk", "prune"}

// targets are issue 14's Conveyor/restic ratios against restic 0.18.1;
// peak RSS is to be at most restic's in every phase.
var targets = map[string]float64{"initial": 0.5, "incremental": 0.3, "unchanged": 0.25, "restore": 0.5, "repo": 1.0}

func run(o options) error {
	sh, ok := shapes[o.shape]
	if !ok {
		return fmt.Errorf("unknown -shape %q: mixed or small", o.shape)
	}
	if o.baseline != "" {
		if _, err := os.Stat(o.baseline); err != nil {
			return fmt.Errorf("-baseline: %v (build one with: git worktree add /tmp/base COMMIT && go -C /tmp/base build -o /tmp/bench-base ./bench/snapshot)", err)
		}
	}
	if _, err := exec.LookPath(o.restic); err != nil {
		return fmt.Errorf("restic not found (%v): go install github.com/restic/restic/cmd/restic@v0.18.1, then -restic $(go env GOPATH)/bin/restic", err)
	}
	dir, err := os.MkdirTemp(o.tmp, "conveyor-bench-snapshot-")
	if err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	printMachine(o)
	results := map[string][]map[string]measure{} // tool -> runs
	sizes := map[string][]int64{}
	kinds := []string{"restic", "conveyor"}
	if o.baseline != "" {
		kinds = append(kinds, "baseline")
	}
	names := kinds
	if o.deleteLate {
		fmt.Printf("nothing is deleted before the bench ends (-delete-late): %s grows to %d copies of the volume, a restore of each, and their repositories\n", dir, o.runs*len(kinds))
	}
	for run := 0; run < o.runs; run++ {
		// Rotate the order between runs: none always gets the warmer cache.
		k := run % len(kinds)
		order := append(append([]string{}, kinds[k:]...), kinds[:k]...)
		for _, kind := range order {
			// Each tool has its own copy of the volume (generation is
			// seeded: the same bytes) and its own directory.
			base := filepath.Join(dir, fmt.Sprintf("run%d-%s", run+1, kind))
			vol := filepath.Join(base, "volume")
			t0 := time.Now()
			st, err := sh.generate(vol, o.scale, int64(run))
			if err != nil {
				return err
			}
			fmt.Printf("\nrun %d, %s: volume %s: %d files, %.0f MB (generated in %s)\n", run+1, kind, vol, st.files, float64(st.bytes)/1e6, time.Since(t0).Round(time.Millisecond))
			var tl tool
			switch kind {
			case "restic":
				tl = &resticTool{bin: o.restic, repo: filepath.Join(base, "restic-repo"), vol: vol}
			case "conveyor":
				tl = &conveyorTool{self: self, label: "conveyor", data: filepath.Join(base, "conveyor-s3"), vol: vol, workers: o.workers}
			default:
				tl = &conveyorTool{self: o.baseline, label: "baseline", data: filepath.Join(base, "baseline-s3"), vol: vol, workers: o.workers}
			}
			m, size, err := phasesOf(tl, sh, vol, base, o, run)
			if err != nil {
				return fmt.Errorf("%s: %w", tl.name(), err)
			}
			results[tl.name()] = append(results[tl.name()], m)
			sizes[tl.name()] = append(sizes[tl.name()], size)
			if !o.deleteLate {
				os.RemoveAll(base)
			}
		}
	}
	repo := map[string]int64{}
	for n, v := range sizes {
		repo[n] = median(v)
	}
	report(names, results, repo, o.prune)
	return nil
}

// tool is one snapshot program.
type tool interface {
	name() string
	init() error
	backup() (measure, error)
	restore(target string) (measure, error)
	prune() (measure, error)
	repoSize() int64
	clean()
}

func phasesOf(tl tool, sh shape, vol, dir string, o options, run int) (map[string]measure, int64, error) {
	scale := o.scale
	if !o.deleteLate {
		defer tl.clean()
	}
	out := map[string]measure{}
	if err := tl.init(); err != nil {
		return nil, 0, err
	}
	m, err := tl.backup()
	if err != nil {
		return nil, 0, err
	}
	out["initial"] = m
	size := tl.repoSize()
	if err := sh.change(vol, scale, 1, int64(run*10+1)); err != nil {
		return nil, 0, err
	}
	if out["incremental"], err = tl.backup(); err != nil {
		return nil, 0, err
	}
	if out["unchanged"], err = tl.backup(); err != nil {
		return nil, 0, err
	}
	target := filepath.Join(dir, "restore-"+tl.name())
	if out["restore"], err = tl.restore(target); err != nil {
		return nil, 0, err
	}
	t0 := time.Now()
	syscall.Sync()
	onDisk := out["restore"]
	onDisk.Wall += time.Since(t0)
	out["on disk"] = onDisk
	fmt.Printf("  %-20s wall %7.2fs  (the restore, then sync)\n", tl.name()+" on disk", onDisk.Wall.Seconds())
	if err := compareTrees(vol, target, tl.name()); err != nil {
		return nil, 0, err
	}
	if !o.deleteLate {
		os.RemoveAll(target)
	}
	if o.prune {
		for i := 0; i < 2; i++ {
			if err := sh.change(vol, scale, 0.25, int64(run*10+2+i)); err != nil {
				return nil, 0, err
			}
			if _, err := tl.backup(); err != nil {
				return nil, 0, err
			}
		}
		if out["prune"], err = tl.prune(); err != nil {
			return nil, 0, err
		}
		fmt.Printf("  %-8s repository: %.0f MB after the initial snapshot, %.0f MB after prune\n", tl.name(), float64(size)/1e6, float64(tl.repoSize())/1e6)
	} else {
		fmt.Printf("  %-8s repository: %.0f MB after the initial snapshot\n", tl.name(), float64(size)/1e6)
	}
	return out, size, nil
}

func median[T int64 | float64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := append([]T(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func runChild(name string, cmd *exec.Cmd) (measure, error) {
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if cmd.Stdout == nil {
		cmd.Stdout = &stderr
	}
	// Dirty pages of the previous step are flushed first, so that their
	// writeback is not charged to this one.
	syscall.Sync()
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return measure{}, err
	}
	// Peak RSS from /proc: the rusage of a child started by vfork+exec
	// also counts the parent's memory at the fork.
	stop := make(chan struct{})
	peak := make(chan int64, 1)
	go func() {
		var max int64
		for {
			if v := vmHWM(cmd.Process.Pid); v > max {
				max = v
			}
			select {
			case <-stop:
				peak <- max
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	err := cmd.Wait()
	wall := time.Since(t0)
	close(stop)
	if err != nil {
		return measure{}, fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, tail(stderr.String(), 2000))
	}
	return measureOf(name, wall, cmd.ProcessState, <-peak), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// vmHWM is the process's peak resident set so far, in bytes.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(l, "VmHWM:"), "kB")), &kb)
			return kb * 1024
		}
	}
	return 0
}
