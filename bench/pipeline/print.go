package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"github.com/conveyorhq/conveyor/bench/internal/benchproc"
)

// progressOut receives progress lines; the figures go to stdout.
var progressOut io.Writer = os.Stderr

// describeMachine gathers what a reader needs to weigh the figures.
func describeMachine(ctx context.Context, bin string) Machine {
	m := Machine{NProc: runtime.NumCPU(), ConveyorBin: bin, LoadAvgStart: benchproc.LoadAvg()}
	if out, err := exec.CommandContext(ctx, "nproc").Output(); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil {
			m.NProc = n
		}
	}
	m.CPU = procField("/proc/cpuinfo", "model name", ":")
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = runtime.GOOS + " " + strings.TrimSpace(string(b))
	}
	if kb, err := strconv.ParseInt(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal", ":"), " kB"), 10, 64); err == nil {
		m.MemTotalMB = kb / 1024
	}
	m.GoVersion = runtime.Version() + " (benchmark)"
	if out, err := exec.CommandContext(ctx, "go", "version").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(string(out))
	}
	m.Conveyor = "unknown"
	cmd := exec.CommandContext(ctx, bin, "version")
	cmd.Env = benchproc.CleanEnv()
	if out, err := cmd.Output(); err == nil {
		m.Conveyor = strings.TrimSpace(string(out))
	}
	m.AWSCLI = "not on PATH (peer comparison skipped)"
	if p, err := exec.LookPath("aws"); err == nil {
		m.AWSCLI = awsVersion(ctx, p, benchproc.CleanEnv()) + " (" + p + ")"
	}
	return m
}

// procField returns the value of the first "key<sep> value" line of a /proc file.
func procField(path, key, sep string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), sep)
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func printHeader(w io.Writer, r *Results) {
	m := r.Machine
	fmt.Fprintf(w, "Conveyor pipeline benchmark, %s\n", r.Date)
	fmt.Fprintf(w, "  machine   %d CPUs (nproc), %s, %d MB RAM, %s\n", m.NProc, m.CPU, m.MemTotalMB, m.Kernel)
	fmt.Fprintf(w, "  load avg  %s at start\n", m.LoadAvgStart)
	fmt.Fprintf(w, "  go        %s\n", m.GoVersion)
	fmt.Fprintf(w, "  conveyor  %s\n", m.Conveyor)
	fmt.Fprintf(w, "  aws cli   %s\n", m.AWSCLI)
	workers := "default (number of CPUs)"
	if r.Config.Workers > 0 {
		workers = strconv.Itoa(r.Config.Workers)
	}
	fmt.Fprintf(w, "  workers   %s\n", workers)
}

func printSummaryHeader(w io.Writer) {
	fmt.Fprintf(w, "  %-38s %9s %9s %9s %9s\n", "", "p50", "p90", "p99", "max")
}

func printSummary(w io.Writer, name string, s Summary) {
	fmt.Fprintf(w, "  %-38s %9s %9s %9s %9s\n", name, fmtMS(s.P50), fmtMS(s.P90), fmtMS(s.P99), fmtMS(s.Max))
}

func fmtMS(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.1f ms", v)
}

func printLatency(w io.Writer, l *Latency) {
	fmt.Fprintf(w, "\nLatency: %d jobs of 1 KiB, one at a time, processor %s\n", l.Jobs, l.Processor)
	printSummaryHeader(w)
	printSummary(w, "PutObject round trip", l.PutMS)
	printSummary(w, "PUT returned -> record created_at", l.CreatedAtMS)
	printSummary(w, "PUT returned -> record finished_at", l.FinishedAtMS)
	printSummary(w, fmt.Sprintf("PUT returned -> seen (poll %gms)", l.PollEveryMS), l.PollSeenMS)
	t := l.RecordTimings
	fmt.Fprintf(w, "  record timings, medians: queued %g ms, fetch %g ms, process %g ms, upload %g ms, total %g ms\n",
		t.QueuedMS, t.FetchMS, t.ProcessMS, t.UploadMS, t.TotalMS)
	fmt.Fprintf(w, "  conveyor up peak RSS: %.0f MB\n", l.PeakRSSMB)
}

func printThroughput(w io.Writer, t *Throughput) {
	fmt.Fprintf(w, "\nThroughput: %d jobs of 1 KiB, %d concurrent uploaders, processor %s\n", t.Jobs, t.Concurrency, t.Processor)
	fmt.Fprintf(w, "  uploads alone                 %8.1f uploads/s  (%.2f s for all PUTs)\n", t.UploadsPerSec, t.UploadSeconds)
	fmt.Fprintf(w, "  end to end                    %8.1f jobs/s     (%.2f s, first PUT -> last finished_at)\n", t.JobsPerSec, t.EndToEndSeconds)
	fmt.Fprintf(w, "  all seen succeeded after      %8.2f s\n", t.PollSeenSeconds)
	printSummaryHeader(w)
	printSummary(w, "PUT returned -> finished_at, per job", t.JobLatencyMS)
	fmt.Fprintf(w, "  conveyor up peak RSS (since start): %.0f MB\n", t.PeakRSSMB)
}

func printLarge(w io.Writer, l *Large) {
	fmt.Fprintf(w, "\nLarge file: %s, processor %s\n", humanBytes(l.Bytes), l.Processor)
	fmt.Fprintf(w, "  pipeline: upload (SDK manager, %s parts, concurrency %d) %.2f s; start -> finished_at %.2f s (seen %.2f s)\n",
		humanBytes(l.PartSizeBytes), l.UploadConcurrency, l.UploadSeconds, l.PipelineSeconds, l.PipelinePollSeenSeconds)
	t := l.RecordTimingsMS
	fmt.Fprintf(w, "  record timings: queued %g ms, fetch %g ms, process %g ms, upload %g ms, total %g ms\n",
		t.QueuedMS, t.FetchMS, t.ProcessMS, t.UploadMS, t.TotalMS)
	fmt.Fprintf(w, "  conveyor up peak RSS after the pipeline: %.0f MB\n", l.PipelinePeakRSSMB)
	if l.PeerSkipped != "" {
		fmt.Fprintf(w, "  peer: skipped: %s\n", l.PeerSkipped)
		return
	}
	fmt.Fprintf(w, "  peer (%s): aws s3 cp up %.2f s + down %.2f s = %.2f s\n", l.PeerClient, l.PeerUpSeconds, l.PeerDownSeconds, l.PeerSeconds)
	fmt.Fprintf(w, "  pipeline / peer: %.2f\n", l.Ratio)
	fmt.Fprintf(w, "  conveyor up peak RSS after the peer copies: %.0f MB\n", l.PeakRSSMB)
}
