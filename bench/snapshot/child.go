package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"time"

	"github.com/conveyorhq/conveyor/internal/s3server"
	"github.com/conveyorhq/conveyor/internal/snapshot"
	snaplocal "github.com/conveyorhq/conveyor/internal/snapshot/local"
)

// child runs one Conveyor operation: the embedded S3 server on the data
// dir and the snapshot engine against it, like `conveyor up` plus
// `conveyor snapshot ...` in one process.
func child(args []string) int {
	fs := flag.NewFlagSet("child", flag.ExitOnError)
	op := fs.String("op", "create", "create, restore or prune")
	data := fs.String("data", "", "S3 data dir")
	vol := fs.String("vol", "", "volume")
	target := fs.String("target", "", "restore target")
	workers := fs.Int("workers", 0, "workers")
	prof := fs.String("cpuprofile", os.Getenv("BENCH_CPUPROFILE"), "write a CPU profile of the child here")
	memprof := fs.String("memprofile", os.Getenv("BENCH_MEMPROFILE"), "write an allocation profile of the child here")
	heapprof := fs.String("heapprofile", os.Getenv("BENCH_HEAPPROFILE"), "write the live heap at its peak here (sampled every 200ms)")
	fs.Parse(args)
	if *heapprof != "" {
		stop := peakHeapProfile(*heapprof + "." + *op)
		defer stop()
	}
	if *memprof != "" {
		// Every allocation of 512 KiB or more is sampled: chunk and pack
		// buffers are what the peak RSS is made of.
		runtime.MemProfileRate = 512 << 10
		defer func() {
			if f, err := os.Create(*memprof + "." + *op); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if *prof != "" {
		// One file per run of an op: the initial, incremental and
		// unchanged snapshots are each a create.
		name := *prof + "." + *op
		for n := 2; ; n++ {
			if _, err := os.Stat(name); err != nil {
				break
			}
			name = fmt.Sprintf("%s.%s.%d", *prof, *op, n)
		}
		f, err := os.Create(name)
		if err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if p := os.Getenv("BENCH_TRACE"); p != "" {
		// An execution trace: where the cores sit idle.
		if f, err := os.Create(p + "." + *op); err == nil {
			trace.Start(f)
			defer func() { trace.Stop(); f.Close() }()
		}
	}
	if err := childRun(*op, *data, *vol, *target, *workers); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func childRun(op, data, vol, target string, workers int) error {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := l.Addr().String()
	l.Close()
	const ak, sk = "BENCHKEY", "bench-secret-key-0123456789abcdefghij"
	srv, err := s3server.Start(ctx, s3server.Config{DataDir: data, Addr: addr, AccessKey: ak, SecretKey: sk, Region: "us-east-1", Buckets: []string{"state"}})
	if err != nil {
		return err
	}
	// In process, as `conveyor snapshot` reaches the server it runs
	// itself when no `conveyor up` runs, and as `conveyor up`'s scheduled
	// snapshots do (BENCH_HTTP=1: over loopback HTTP, as a command beside
	// a running `conveyor up` does).
	var store snaplocal.ObjectStore = srv.Direct()
	if os.Getenv("BENCH_HTTP") == "1" {
		store = s3server.NewClient(srv.Endpoint(), ak, sk, "us-east-1")
	}
	// Encrypted, as restic is (its password is "bench" too).
	// BENCH_UPLOADS sets snapshot.uploads (transfers, and restore's pack
	// workers, in flight), for trials.
	uploads, _ := strconv.Atoi(os.Getenv("BENCH_UPLOADS"))
	r, err := snaplocal.Open(ctx, store, snaplocal.Config{Bucket: "state", Source: vol, Workers: workers, Uploads: uploads, Key: snaplocal.NewPassword("bench")})
	if err != nil {
		return err
	}
	var res any
	switch op {
	case "create":
		res, err = r.Create(ctx, snapshot.CreateOptions{})
	case "restore":
		err = r.Restore(ctx, "latest", snapshot.RestoreOptions{Target: target, Buffered: os.Getenv("BENCH_BUFFERED") == "1"}) // BENCH_BUFFERED: through the page cache, for trials
	case "prune":
		res, err = r.Prune(ctx, snapshot.Policy{KeepLast: 2})
	default:
		err = fmt.Errorf("unknown op %q", op)
	}
	if err != nil {
		return err
	}
	if res != nil {
		json.NewEncoder(os.Stdout).Encode(res)
	}
	return nil
}

// peakHeapProfile writes a heap profile to path each time the live heap
// (as of the last collection) reaches a new peak, checked every 200 ms:
// what the peak RSS of an operation is made of.
func peakHeapProfile(path string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var peak uint64
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak+peak/20 {
				peak = v
				if f, err := os.Create(path); err == nil {
					pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}
