package lambda

import (
	"encoding/json"
	"time"
)

// The reconciler's CloudWatch metrics, in MetricNamespace with one
// dimension, MetricDimension (the function's name). Every pass emits each
// of them once; ReconcileFailed is 1 for a failed pass and 0 otherwise, so
// an alarm can watch for failures (Sum >= 1) and, with missing data
// treated as breaching, for passes that stopped running.
const (
	MetricNamespace  = "Conveyor"
	MetricDimension  = "Function"
	MetricFailed     = "ReconcileFailed"     // Count: 1 when the pass failed
	MetricDuration   = "ReconcileDuration"   // Milliseconds the pass took
	MetricObjects    = "ReconcileObjects"    // Count of input objects seen
	MetricDispatched = "ReconcileDispatched" // Count of jobs dispatched (missing + unfinished)
	// MetricBacklog is the unfinished jobs (queued, running, retrying) the
	// pass counted: what the workers' Auto Scaling group scales on, and
	// what stops them when it stays at zero.
	MetricBacklog       = "Backlog"
	reconcileLogMessage = "reconciled"
)

// metricLine is one pass's log line in CloudWatch's embedded metric format:
// a JSON object whose "_aws" member declares which of its top-level fields
// are metrics (with their unit) and which are dimensions; CloudWatch Logs
// extracts them from the function's log group. The other fields (counts,
// limited, the errors) are only log fields, for Logs Insights.
func metricLine(now time.Time, function string, took time.Duration, rc *Reconciled) []byte {
	failed, level := 0, "INFO"
	if len(rc.Errors) > 0 {
		failed, level = 1, "ERROR"
	}
	type metric struct {
		Name string `json:"Name"`
		Unit string `json:"Unit"`
	}
	line := map[string]any{
		"_aws": map[string]any{
			"Timestamp": now.UnixMilli(),
			"CloudWatchMetrics": []any{map[string]any{
				"Namespace":  MetricNamespace,
				"Dimensions": [][]string{{MetricDimension}},
				"Metrics": []metric{
					{MetricFailed, "Count"},
					{MetricDuration, "Milliseconds"},
					{MetricObjects, "Count"},
					{MetricDispatched, "Count"},
					{MetricBacklog, "Count"},
				},
			}},
		},
		MetricDimension:  function,
		MetricFailed:     failed,
		MetricDuration:   took.Milliseconds(),
		MetricObjects:    rc.Objects,
		MetricDispatched: rc.Missing + rc.Unfinished,
		MetricBacklog:    rc.Backlog,
		"held":           rc.Held,
		// What slog's JSON handler writes for the other log lines.
		"time":       now.UTC().Format(time.RFC3339Nano),
		"level":      level,
		"msg":        reconcileLogMessage,
		"missing":    rc.Missing,
		"unfinished": rc.Unfinished,
		"superseded": rc.Superseded,
		"limited":    rc.Limited,
		"errors":     len(rc.Errors),
	}
	if len(rc.Errors) > 0 {
		line["error"] = rc.Errors[0]
	}
	b, err := json.Marshal(line)
	if err != nil { // only maps of plain values: cannot happen
		panic(err)
	}
	return b
}
