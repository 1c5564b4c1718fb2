// Command pipeline benchmarks a running `conveyor up` from the outside, the
// way a user drives it: it starts the conveyor binary as a subprocess on a
// fresh data dir and loopback port, uploads with the AWS SDK for Go v2 and
// reads the job records from the state bucket.
//
// It measures the latency of one small job, the throughput of many small
// jobs uploaded concurrently, and the time to process one large file next
// to a plain upload and download of the same file with the AWS CLI through
// the same server. See bench/README.md for what each figure means.
//
//	go run ./bench/pipeline                               # full run
//	go run ./bench/pipeline -skip-large -latency-jobs 100 # quick run
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/conveyorhq/conveyor/bench/internal/benchproc"
)

// options are the command-line flags.
type options struct {
	conveyor       string
	latencyJobs    int
	throughputJobs int
	concurrency    int
	workers        int
	largeSize      int64
	skipLarge      bool
	jsonPath       string
	keep           bool
	tmpParent      string
	timeout        time.Duration
}

func main() {
	o := options{largeSize: 1 << 30}
	flag.StringVar(&o.conveyor, "conveyor", "", "conveyor binary to run (default: go build ./cmd/conveyor into the temp dir)")
	flag.IntVar(&o.latencyJobs, "latency-jobs", 500, "sequential 1 KiB jobs for the latency phase (0 skips it)")
	flag.IntVar(&o.throughputJobs, "throughput-jobs", 2000, "1 KiB jobs for the throughput phase (0 skips it)")
	flag.IntVar(&o.concurrency, "concurrency", 32, "concurrent uploaders in the throughput phase")
	flag.IntVar(&o.workers, "workers", 0, "conveyor up --workers (0: conveyor's default, the number of CPUs)")
	flag.Var(sizeFlag{&o.largeSize}, "large-size", "size of the large file, e.g. 1GiB, 256MiB, 1000000")
	flag.BoolVar(&o.skipLarge, "skip-large", false, "skip the large-file phase")
	flag.StringVar(&o.jsonPath, "json", "", "also write every figure as JSON to this file")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp dir (data dirs, logs, generated files)")
	flag.StringVar(&o.tmpParent, "tmp", "", "parent of the temp dir (default $TMPDIR or /tmp); needs xattr support and room for about 5x -large-size")
	flag.DurationVar(&o.timeout, "timeout", 45*time.Minute, "bound of the whole run")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "pipeline: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if o.concurrency < 1 || o.largeSize < 1 || o.latencyJobs < 0 || o.throughputJobs < 0 {
		fmt.Fprintln(os.Stderr, "pipeline: -concurrency and -large-size must be positive, job counts not negative")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "pipeline: %v\n", err)
		os.Exit(1)
	}
}

// run does the whole benchmark; the temp dir is removed at the end unless
// -keep, and kept (without its large files) when something failed, so the
// logs can be read.
func run(ctx context.Context, o options) (err error) {
	tmp, err := os.MkdirTemp(o.tmpParent, "conveyor-bench-")
	if err != nil {
		return err
	}
	defer func() {
		switch {
		case o.keep:
			fmt.Printf("\ntemp dir kept: %s\n", tmp)
		case err != nil:
			os.Remove(filepath.Join(tmp, largeName))
			os.Remove(filepath.Join(tmp, peerDownName))
			fmt.Fprintf(os.Stderr, "pipeline: temp dir kept for its logs (large files removed): %s\n", tmp)
		default:
			fmt.Fprintf(progressOut, "removing %s...\n", tmp)
			os.RemoveAll(tmp)
		}
	}()

	if o.conveyor == "" {
		fmt.Fprintln(os.Stderr, "building conveyor...")
		if o.conveyor, err = benchproc.BuildConveyor(ctx, tmp); err != nil {
			return err
		}
	} else if o.conveyor, err = filepath.Abs(o.conveyor); err != nil {
		return err
	}

	res := &Results{Date: time.Now().UTC().Format(time.RFC3339)}
	res.Machine = describeMachine(ctx, o.conveyor)
	res.Config = Config{
		LatencyJobs: o.latencyJobs, ThroughputJobs: o.throughputJobs, Concurrency: o.concurrency,
		Workers: o.workers, FileSize: smallSize, LargeSize: o.largeSize, SkipLarge: o.skipLarge,
	}
	printHeader(os.Stdout, res)

	if o.latencyJobs > 0 || o.throughputJobs > 0 {
		up, err := startUp(ctx, o.conveyor, filepath.Join(tmp, "noop"), "noop", o.workers)
		if err != nil {
			return err
		}
		if err := smallPhases(ctx, o, up, res); err != nil {
			up.stop()
			return up.failed(err)
		}
		if err := up.stop(); err != nil {
			return up.failed(err)
		}
	}
	if !o.skipLarge {
		up, err := startUp(ctx, o.conveyor, filepath.Join(tmp, "report"), "report", o.workers)
		if err != nil {
			return err
		}
		res.Large, err = runLarge(ctx, up, tmp, o.largeSize)
		if err != nil {
			up.stop()
			return up.failed(fmt.Errorf("large file: %w", err))
		}
		if err := up.stop(); err != nil {
			return up.failed(err)
		}
		printLarge(os.Stdout, res.Large)
	}
	res.Machine.LoadAvgEnd = benchproc.LoadAvg()
	fmt.Printf("\nload average at the end: %s\n", res.Machine.LoadAvgEnd)
	if o.jsonPath != "" {
		if err := writeJSON(o.jsonPath, res); err != nil {
			return err
		}
		fmt.Printf("figures written to %s\n", o.jsonPath)
	}
	return nil
}

// smallPhases runs the latency and throughput phases on one noop pipeline.
func smallPhases(ctx context.Context, o options, up *upProc, res *Results) error {
	if o.latencyJobs > 0 {
		lat, err := runLatency(ctx, up, o.latencyJobs)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		res.Latency = lat
		printLatency(os.Stdout, lat)
	}
	if o.throughputJobs > 0 {
		thr, err := runThroughput(ctx, up, o.throughputJobs, o.concurrency)
		if err != nil {
			return fmt.Errorf("throughput: %w", err)
		}
		res.Throughput = thr
		printThroughput(os.Stdout, thr)
	}
	return nil
}
