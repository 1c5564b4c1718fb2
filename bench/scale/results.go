package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
)

// Results are the figures of one run; -1 is a figure that could not be
// taken (Notes says why).
type Results struct {
	Records             int     `json:"records"`
	ReconcilePassS      float64 `json:"reconcile_pass_s"`
	StartupS            float64 `json:"startup_s"`
	GetKeyS             float64 `json:"get_key_s"`
	JobsStateQueryS     float64 `json:"jobs_state_query_s"`
	DashboardFirstPageS float64 `json:"dashboard_first_page_s"`
	RSSMB               float64 `json:"rss_mb"`
	IdleCPUPct          float64 `json:"idle_cpu_pct"`

	// How reconcile_pass_s was taken, and context for the figures above.
	ReconcileMeasure       string           `json:"reconcile_measure,omitempty"`
	FirstReconcileAfterUpS float64          `json:"first_reconcile_after_up_s"`
	DashboardReadyS        float64          `json:"dashboard_ready_s"`
	PrepareS               float64          `json:"prepare_s"`
	PrepareRecordsPerS     float64          `json:"prepare_records_per_s"`
	PreparePuts            int64            `json:"prepare_puts"`
	States                 map[string]int64 `json:"states"`
	Date                   string           `json:"date"`
	LoadAvgStart           string           `json:"load_avg_start"`
	LoadAvgEnd             string           `json:"load_avg_end"`
	Notes                  []string         `json:"notes,omitempty"`
}

func (r *Results) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// goals are the targets at 1,000,000 records (bench/README.md).
var goals = map[string]string{
	"reconcile_pass_s": "< 2 s", "startup_s": "< 5 s", "get_key_s": "< 0.5 s",
	"jobs_state_query_s": "< 0.5 s", "dashboard_first_page_s": "< 0.5 s",
	"rss_mb": "< 300 MB", "idle_cpu_pct": "< 2 %",
}

// printResults writes the readable table.
func printResults(w io.Writer, r *Results) {
	fmt.Fprintf(w, "\nConveyor scale benchmark, %s: %d job records\n", r.Date, r.Records)
	var states []string
	for s, n := range r.States {
		states = append(states, fmt.Sprintf("%d %s", n, s))
	}
	sort.Strings(states)
	fmt.Fprintf(w, "  history   %v\n", states)
	fmt.Fprintf(w, "  prepared  in %.1f s (%.0f records/s, %d PUTs)\n", r.PrepareS, r.PrepareRecordsPerS, r.PreparePuts)
	fmt.Fprintf(w, "  load avg  %s at start, %s at the end\n\n", r.LoadAvgStart, r.LoadAvgEnd)
	fmt.Fprintf(w, "  %-24s %12s   %s\n", "figure", "measured", "goal at 1,000,000")
	row := func(name string, v float64, unit string) {
		s := "failed"
		if v >= 0 {
			s = fmt.Sprintf("%.3f %s", v, unit)
		}
		fmt.Fprintf(w, "  %-24s %12s   %s\n", name, s, goals[name])
	}
	row("reconcile_pass_s", r.ReconcilePassS, "s")
	row("startup_s", r.StartupS, "s")
	row("get_key_s", r.GetKeyS, "s")
	row("jobs_state_query_s", r.JobsStateQueryS, "s")
	row("dashboard_first_page_s", r.DashboardFirstPageS, "s")
	row("rss_mb", r.RSSMB, "MB")
	row("idle_cpu_pct", r.IdleCPUPct, "%")
	if r.ReconcileMeasure != "" {
		fmt.Fprintf(w, "\n  reconcile pass: %s; first report %.3f s after \"conveyor is up\"\n", r.ReconcileMeasure, r.FirstReconcileAfterUpS)
	}
	if r.DashboardReadyS >= 0 {
		fmt.Fprintf(w, "  dashboard's first scan complete %.3f s after process start\n", r.DashboardReadyS)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

// writeJSON writes r to path, indented.
func writeJSON(path string, r *Results) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
