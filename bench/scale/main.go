// Command scale measures how Conveyor's operations scale with the history
// of job records: it writes N records in a realistic mix of states (and
// their input objects) straight into the state bucket of a fresh
// `conveyor up`, restarts it on that data dir and times what a user and
// the pipeline itself do: start-up, one reconcile pass, `conveyor get`,
// `conveyor jobs --state dead`, the dashboard's first page, peak memory
// and the CPU it uses while idle. See bench/README.md.
//
//	go run ./bench/scale -records 100000 -json scale.json
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/conveyorhq/conveyor/bench/internal/benchproc"
)

// progressOut receives progress lines; the figures go to stdout.
var progressOut io.Writer = os.Stderr

// options are the command-line flags.
type options struct {
	records   int
	jsonPath  string
	conveyor  string
	keep      bool
	tmpParent string
	writers   int
	idle      time.Duration
	timeout   time.Duration
}

func main() {
	var o options
	flag.IntVar(&o.records, "records", 100000, "job records to write before measuring")
	flag.StringVar(&o.jsonPath, "json", "", "also write the figures as JSON to this file")
	flag.StringVar(&o.conveyor, "conveyor", "", "conveyor binary to run (default: go build ./cmd/conveyor into the temp dir)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp dir (data dir with the history, logs)")
	flag.StringVar(&o.tmpParent, "tmp", "", "parent of the temp dir (default $TMPDIR or /tmp); needs xattr support and about 20 KB per record")
	flag.IntVar(&o.writers, "writers", 32, "parallel writers while preparing the history")
	flag.DurationVar(&o.idle, "idle", 30*time.Second, "how long the idle CPU use is measured")
	flag.DurationVar(&o.timeout, "timeout", 0, "bound of the whole run (default: 30 min plus 3 ms per record)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "scale: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if o.records < 10 || o.writers < 1 || o.idle <= 0 {
		fmt.Fprintln(os.Stderr, "scale: -records must be at least 10, -writers and -idle positive")
		os.Exit(2)
	}
	if o.timeout == 0 {
		o.timeout = 30*time.Minute + time.Duration(o.records)*3*time.Millisecond
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := run(ctx, o); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: the run passed -timeout %s; raise it, or lower -records", err, o.timeout)
		}
		fmt.Fprintf(os.Stderr, "scale: %v\n", err)
		os.Exit(1)
	}
}

// run prepares the history, measures and reports. The temp dir is removed
// at the end unless -keep, and kept when something failed, for its logs.
func run(ctx context.Context, o options) (err error) {
	tmp, err := os.MkdirTemp(o.tmpParent, "conveyor-scale-")
	if err != nil {
		return err
	}
	defer func() {
		switch {
		case o.keep:
			fmt.Printf("\ntemp dir kept: %s\n", tmp)
		case err != nil:
			fmt.Fprintf(os.Stderr, "scale: temp dir kept for its logs: %s (remove it when done)\n", tmp)
		default:
			fmt.Fprintf(progressOut, "removing %s...\n", tmp)
			os.RemoveAll(tmp)
		}
	}()
	if o.conveyor == "" {
		fmt.Fprintln(progressOut, "building conveyor...")
		if o.conveyor, err = benchproc.BuildConveyor(ctx, tmp); err != nil {
			return err
		}
	} else if o.conveyor, err = filepath.Abs(o.conveyor); err != nil {
		return err
	}
	res := &Results{Records: o.records, Date: time.Now().UTC().Format(time.RFC3339), LoadAvgStart: benchproc.LoadAvg()}
	dataDir := filepath.Join(tmp, "data")

	// The history is written while no event can start a job for it: its
	// records say it was processed over the last 28 days.
	fmt.Fprintf(progressOut, "writing %d job records with %d writers...\n", o.records, o.writers)
	up, err := startUp(ctx, o.conveyor, dataDir, "prepare", false, []string{
		"CONVEYOR_FILTER_PREFIXES=" + prepareFilter,
		"CONVEYOR_RECONCILE_INTERVAL=24h",
	}, time.Minute)
	if err != nil {
		return err
	}
	stats := &prepStats{}
	start := time.Now()
	getKey, err := prepare(ctx, up.s3, o.records, o.writers, stats)
	res.PrepareS = time.Since(start).Seconds()
	if err != nil {
		up.stop()
		return up.failed(fmt.Errorf("prepare: %w", err))
	}
	if err := up.stop(); err != nil {
		return up.failed(err)
	}
	res.PrepareRecordsPerS = float64(stats.records.Load()) / res.PrepareS
	res.PreparePuts = stats.puts.Load()
	res.States = stats.stateCounts()
	fmt.Fprintf(progressOut, "wrote %d records (%d PUTs) in %.1f s: %.0f records/s\n",
		stats.records.Load(), res.PreparePuts, res.PrepareS, res.PrepareRecordsPerS)

	if err := measure(ctx, o, dataDir, tmp, getKey, res); err != nil {
		return err
	}
	res.LoadAvgEnd = benchproc.LoadAvg()
	printResults(os.Stdout, res)
	if o.jsonPath != "" {
		if err := writeJSON(o.jsonPath, res); err != nil {
			return err
		}
		fmt.Printf("figures written to %s\n", o.jsonPath)
	}
	return nil
}

// prepareFilter is a key prefix no input of the history has: while it is
// the filter, `conveyor up` starts no job for what the benchmark writes.
const prepareFilter = "only-this/"
