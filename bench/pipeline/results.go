package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// Results are all the figures of one run, as written by -json.
type Results struct {
	Date       string      `json:"date"`
	Machine    Machine     `json:"machine"`
	Config     Config      `json:"config"`
	Latency    *Latency    `json:"latency,omitempty"`
	Throughput *Throughput `json:"throughput,omitempty"`
	Large      *Large      `json:"large,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	NProc        int    `json:"nproc"`
	CPU          string `json:"cpu"`
	Kernel       string `json:"kernel"`
	GoVersion    string `json:"go_version"`
	Conveyor     string `json:"conveyor_version"`
	ConveyorBin  string `json:"conveyor_binary"`
	AWSCLI       string `json:"aws_cli"`
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
	MemTotalMB   int64  `json:"mem_total_mb"`
}

// Config is what the run was asked to do.
type Config struct {
	LatencyJobs    int   `json:"latency_jobs"`
	ThroughputJobs int   `json:"throughput_jobs"`
	Concurrency    int   `json:"concurrency"`
	Workers        int   `json:"workers"` // 0: conveyor's default (number of CPUs)
	FileSize       int   `json:"small_file_bytes"`
	LargeSize      int64 `json:"large_file_bytes"`
	SkipLarge      bool  `json:"skip_large"`
}

// Summary is a distribution in milliseconds.
type Summary struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Timings are the phases a job record reports, in milliseconds.
type Timings struct {
	QueuedMS  float64 `json:"queued_ms"`
	FetchMS   float64 `json:"fetch_ms"`
	ProcessMS float64 `json:"process_ms"`
	UploadMS  float64 `json:"upload_ms"`
	TotalMS   float64 `json:"total_ms"`
}

// Latency is the sequential small-job phase.
type Latency struct {
	Jobs          int     `json:"jobs"`
	Processor     string  `json:"processor"`
	Workers       int     `json:"workers"`
	PollEveryMS   float64 `json:"poll_every_ms"`
	PutMS         Summary `json:"put_ms"`             // PutObject round trip
	CreatedAtMS   Summary `json:"created_at_ms"`      // record's created_at minus PutObject return
	FinishedAtMS  Summary `json:"finished_at_ms"`     // record's finished_at minus PutObject return
	PollSeenMS    Summary `json:"poll_observed_ms"`   // GET that saw "succeeded" minus PutObject return
	RecordTimings Timings `json:"record_timings_p50"` // medians of the records' own timings
	PeakRSSMB     float64 `json:"conveyor_peak_rss_mb"`
}

// Throughput is the concurrent small-job phase.
type Throughput struct {
	Jobs            int     `json:"jobs"`
	Concurrency     int     `json:"concurrency"`
	Processor       string  `json:"processor"`
	Workers         int     `json:"workers"`
	UploadSeconds   float64 `json:"upload_seconds"`
	UploadsPerSec   float64 `json:"uploads_per_sec"`
	EndToEndSeconds float64 `json:"end_to_end_seconds"` // first PUT to the last finished_at
	JobsPerSec      float64 `json:"jobs_per_sec"`
	PollSeenSeconds float64 `json:"poll_observed_seconds"` // first PUT to the sweep that saw all succeeded
	JobLatencyMS    Summary `json:"job_latency_ms"`        // finished_at minus each PutObject return
	PeakRSSMB       float64 `json:"conveyor_peak_rss_mb"`  // cumulative since start, latency phase included
}

// Large is the large-file phase.
type Large struct {
	Bytes                   int64   `json:"bytes"`
	Processor               string  `json:"processor"`
	PartSizeBytes           int64   `json:"part_size_bytes"`
	UploadConcurrency       int     `json:"upload_concurrency"`
	JobID                   string  `json:"job_id"`
	UploadSeconds           float64 `json:"upload_seconds"`
	PipelineSeconds         float64 `json:"pipeline_seconds"` // start of upload to finished_at
	PipelinePollSeenSeconds float64 `json:"pipeline_poll_observed_seconds"`
	RecordTimingsMS         Timings `json:"record_timings"`
	PipelinePeakRSSMB       float64 `json:"conveyor_peak_rss_mb_after_pipeline"`
	PeerClient              string  `json:"peer_client,omitempty"`
	PeerSkipped             string  `json:"peer_skipped,omitempty"`
	PeerUpSeconds           float64 `json:"peer_up_seconds,omitempty"`
	PeerDownSeconds         float64 `json:"peer_down_seconds,omitempty"`
	PeerSeconds             float64 `json:"peer_seconds,omitempty"`
	Ratio                   float64 `json:"pipeline_over_peer,omitempty"`
	PeakRSSMB               float64 `json:"conveyor_peak_rss_mb_after_peer,omitempty"`
}

// summarize computes a Summary with nearest-rank percentiles.
func summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	rank := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		return msf(s[max(i, 0)])
	}
	return Summary{
		N: len(s), Min: msf(s[0]), P50: rank(50), P90: rank(90), P99: rank(99), Max: msf(s[len(s)-1]),
		Mean: msf(sum / time.Duration(len(s))),
	}
}

// msf is d in milliseconds, rounded to 0.01.
func msf(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

func medianTimings(queued, fetch, process, upload, total []time.Duration) Timings {
	return Timings{
		QueuedMS: summarize(queued).P50, FetchMS: summarize(fetch).P50, ProcessMS: summarize(process).P50,
		UploadMS: summarize(upload).P50, TotalMS: summarize(total).P50,
	}
}

func timingsOf(t job.Timings) Timings {
	return Timings{
		QueuedMS: float64(t.QueuedMS), FetchMS: float64(t.FetchMS), ProcessMS: float64(t.ProcessMS),
		UploadMS: float64(t.UploadMS), TotalMS: float64(t.TotalMS),
	}
}

func writeJSON(path string, r *Results) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write -json file: %w", err)
	}
	return nil
}

// sizeFlag parses sizes like 1GiB, 256MiB, 64KiB, 1GB or a byte count.
type sizeFlag struct{ v *int64 }

func (s sizeFlag) String() string {
	if s.v == nil {
		return ""
	}
	return humanBytes(*s.v)
}

func (s sizeFlag) Set(v string) error {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	num, mult := strings.TrimSpace(v), int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 {
		return fmt.Errorf("%q is not a size; use e.g. 1GiB, 256MiB or a byte count", v)
	}
	*s.v = int64(f * float64(mult))
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
