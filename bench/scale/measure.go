package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/conveyorhq/conveyor/bench/internal/benchproc"
)

// Bounds of the waits, failure bounds rather than delays.
const (
	queryTimeout   = 10 * time.Minute // one CLI command or page
	settleTimeout  = 2 * time.Minute  // the queued jobs of the history being run
	startupTimeout = 5 * time.Minute
)

// passTimeout bounds the first reconcile pass and the dashboard's first
// scan: both read every record in the current code.
func passTimeout(records int) time.Duration {
	return 5*time.Minute + time.Duration(records)*2*time.Millisecond
}

// measure restarts `conveyor up` on the prepared data dir and takes the
// figures. A figure that cannot be taken is -1 with a note; only a
// pipeline that does not start fails the run.
func measure(ctx context.Context, o options, dataDir, tmp, getKey string, res *Results) error {
	fmt.Fprintln(progressOut, "restarting conveyor up on the history...")
	up, err := startUp(ctx, o.conveyor, dataDir, "measure", true, nil, startupTimeout)
	if err != nil {
		return err
	}
	defer up.stop()
	upLine, _ := up.waitLine(ctx, "conveyor is up", 0)
	res.StartupS = upLine.at.Sub(up.started).Seconds()

	fmt.Fprintln(progressOut, "waiting for the first reconcile pass...")
	res.ReconcilePassS, res.FirstReconcileAfterUpS = -1, -1
	if l, err := up.waitLine(ctx, "reconcile:", passTimeout(o.records)); err != nil {
		res.note("reconcile_pass_s: %v; it prints a line only when a pass dispatched, submitted or failed something; see %s", err, up.stderrLog)
	} else {
		res.FirstReconcileAfterUpS = l.at.Sub(upLine.at).Seconds()
		if d, ok := printedDuration(l.text); ok {
			res.ReconcilePassS = d.Seconds()
			res.ReconcileMeasure = "the pass's duration as conveyor printed it"
		} else {
			res.ReconcilePassS = l.at.Sub(up.started).Seconds()
			res.ReconcileMeasure = "process start to the first \"reconcile:\" line (an upper bound: includes start-up; conveyor prints no pass duration)"
		}
	}

	fmt.Fprintln(progressOut, "waiting for the dashboard's first scan...")
	res.DashboardReadyS = -1
	if err := waitDashboard(ctx, up.dashboard, passTimeout(o.records), func(p apiPage) bool { return p.Ready == nil || *p.Ready }); err != nil {
		res.note("dashboard_ready_s: %v", err)
	} else {
		res.DashboardReadyS = time.Since(up.started).Seconds()
	}
	// The history's queued jobs run now (noop): let them finish, so that
	// the queries and the idle figure see nothing in flight.
	if err := waitDashboard(ctx, up.dashboard, settleTimeout, func(p apiPage) bool { return p.Counts["queued"] == 0 }); err != nil {
		res.note("queued jobs still in flight during the queries: %v", err)
	}

	fmt.Fprintln(progressOut, "timing the queries...")
	res.GetKeyS = timeCLI(ctx, up, res, "get_key_s", "get", getKey, "--to", filepath.Join(tmp, "get"))
	res.JobsStateQueryS = timeCLI(ctx, up, res, "jobs_state_query_s", "jobs", "--state", "dead", "--limit", "50")
	res.DashboardFirstPageS = timePage(ctx, up.dashboard, res)

	fmt.Fprintf(progressOut, "measuring idle CPU for %s...\n", o.idle)
	res.IdleCPUPct = -1
	if pct, err := idleCPU(ctx, up, o.idle); err != nil {
		res.note("idle_cpu_pct: %v", err)
	} else {
		res.IdleCPUPct = pct
	}
	res.RSSMB = up.peakRSSMB()
	if err := up.stop(); err != nil {
		res.note("stop: %v", err)
	}
	return nil
}

// printedDuration reads a pass duration printed as "... in 1.234s" at the
// end of a reconcile line, the hook the benchmark would use when present.
func printedDuration(line string) (time.Duration, bool) {
	i := strings.LastIndex(line, " in ")
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(line[i+4:])
	if len(f) == 0 {
		return 0, false
	}
	d, err := time.ParseDuration(strings.TrimRight(f[0], ",;)"))
	return d, err == nil
}

// timeCLI runs `conveyor ARGS --data-dir DATA` and returns its wall time
// in seconds, or -1 with a note when it fails or passes queryTimeout.
func timeCLI(ctx context.Context, up *upProc, res *Results, name string, args ...string) float64 {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, up.bin, append(args, "--data-dir", up.dataDir)...)
	cmd.Env, cmd.Dir = benchproc.CleanEnv(), filepath.Dir(up.dataDir)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	switch {
	case ctx.Err() != nil:
		res.note("%s: conveyor %s did not finish within %s", name, strings.Join(args, " "), queryTimeout)
		return -1
	case err != nil:
		res.note("%s: conveyor %s: %v: %s", name, strings.Join(args, " "), err, firstLine(out))
		return -1
	}
	return d.Seconds()
}

// timePage returns the wall time of one GET of the dashboard's jobs page,
// the whole body read, or -1 with a note.
func timePage(ctx context.Context, url string, res *Results) float64 {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		res.note("dashboard_first_page_s: %v", err)
		return -1
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		res.note("dashboard_first_page_s: GET %s: %v", url, err)
		return -1
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil || resp.StatusCode != http.StatusOK {
		res.note("dashboard_first_page_s: GET %s: %s %v", url, resp.Status, err)
		return -1
	}
	return d.Seconds()
}

// apiPage is what the benchmark reads of the dashboard's /api/jobs.
type apiPage struct {
	Ready  *bool          `json:"ready"` // absent: the dashboard has no scan to wait for
	Counts map[string]int `json:"counts"`
}

// waitDashboard polls /api/jobs every 250 ms, at most timeout, until done.
func waitDashboard(ctx context.Context, base string, timeout time.Duration, done func(apiPage) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := strings.TrimSuffix(base, "/") + "/api/jobs"
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var p apiPage
			err = json.NewDecoder(resp.Body).Decode(&p)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK && done(p) {
				return nil
			}
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("GET %s: %s", url, resp.Status)
			}
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not done within %s (last error: %v)", timeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// idleCPU is the CPU `conveyor up` uses over d, in percent of one core.
func idleCPU(ctx context.Context, up *upProc, d time.Duration) (float64, error) {
	c0, err := up.cpuTime()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	select {
	case <-time.After(d):
	case <-up.exited:
		return 0, fmt.Errorf("conveyor up exited: %v", up.waitErr)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	c1, err := up.cpuTime()
	if err != nil {
		return 0, err
	}
	return 100 * (c1 - c0).Seconds() / time.Since(start).Seconds(), nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}
